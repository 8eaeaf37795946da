"""Atomic file sets: layout, unchanged detection, modes, planted symlinks, crash recovery, torn reads."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agent.errors import FileSetError
from agent.fileset import DATA_LINK, TIMESTAMPED_RE, FileSet, FileSpec, Outcome
from shared.errors import InvalidInput
from tests.support import REPO


def entry(namespace: str, key: str, value: object, *, secret: bool = False) -> FileSpec:
    return FileSpec.for_entry(namespace, key, ".json", json.dumps(value).encode() + b"\n", secret=secret)


def timestamped(root: Path) -> list[str]:
    return sorted(name for name in os.listdir(root) if TIMESTAMPED_RE.fullmatch(name))


def outside_tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


class TestLayout:
    def test_kubelet_layout_and_content(self, tmp_path: Path) -> None:
        """A set lands in one timestamped dir behind ..data; top-level names are links into ..data."""
        fs = FileSet(tmp_path / "config")
        result = fs.write(
            [entry("llm-gateway/routing", "primary-model", {"m": 1}), entry("api", "limits", {"rpm": 5})],
            revision=7,
        )
        root = tmp_path / "config"
        assert result.outcome is Outcome.WRITTEN
        assert os.readlink(root / DATA_LINK) == result.directory
        assert timestamped(root) == [result.directory]
        assert os.readlink(root / "llm-gateway") == "..data/llm-gateway"
        assert os.readlink(root / "api") == "..data/api"
        assert json.loads((root / "llm-gateway/routing/primary-model.json").read_text()) == {"m": 1}
        assert (root / "api/limits.json").read_bytes() == b'{"rpm": 5}\n'

    def test_modes_secret_and_plain(self, tmp_path: Path) -> None:
        """Plain files are 0644, secret files 0600, whatever the process umask."""
        old = os.umask(0o077)
        try:
            FileSet(tmp_path).write([entry("a", "plain", 1), entry("a", "key", 2, secret=True)])
        finally:
            os.umask(old)
        assert stat.S_IMODE(os.stat(tmp_path / "a/plain.json").st_mode) == 0o644
        assert stat.S_IMODE(os.stat(tmp_path / "a/key.json").st_mode) == 0o600
        assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o755

    def test_configurable_modes(self, tmp_path: Path) -> None:
        """file_mode and secret_mode are applied as given."""
        FileSet(tmp_path, file_mode=0o640, secret_mode=0o400).write(
            [entry("a", "plain", 1), entry("a", "key", 2, secret=True)]
        )
        assert stat.S_IMODE(os.stat(tmp_path / "a/plain.json").st_mode) == 0o640
        assert stat.S_IMODE(os.stat(tmp_path / "a/key.json").st_mode) == 0o400

    def test_owner_is_applied(self, tmp_path: Path) -> None:
        """With owner set, files and directories get that uid and gid."""
        owner = (os.getuid(), os.getgid())
        FileSet(tmp_path, owner=owner).write([entry("a", "k", 1)])
        st = os.stat(tmp_path / "a/k.json")
        assert (st.st_uid, st.st_gid) == owner

    def test_template_output_at_top_level(self, tmp_path: Path) -> None:
        """A plain name (a rendered template) becomes a top-level link like a namespace dir."""
        FileSet(tmp_path).write([FileSpec("nginx.conf", b"events {}\n")])
        assert os.readlink(tmp_path / "nginx.conf") == "..data/nginx.conf"
        assert (tmp_path / "nginx.conf").read_bytes() == b"events {}\n"

    def test_revision_recorded_and_read_back(self, tmp_path: Path) -> None:
        """current() returns the files, their modes and the revision written with them."""
        fs = FileSet(tmp_path)
        fs.write([entry("a", "k", 1, secret=True)], revision=42)
        applied = fs.current()
        assert applied is not None
        assert applied.revision == 42
        assert applied.drifted == ()
        assert applied.contents() == {"a/k.json": b"1\n"}
        assert applied.files["a/k.json"].mode == 0o600

    def test_current_is_none_before_first_write(self, tmp_path: Path) -> None:
        """Nothing applied yet: current() is None."""
        assert FileSet(tmp_path).current() is None


class TestChanges:
    def test_unchanged_content_writes_nothing(self, tmp_path: Path) -> None:
        """The same content again: 'unchanged', the same directory, files not rewritten."""
        fs = FileSet(tmp_path)
        first = fs.write([entry("a", "k", 1)], revision=1)
        inode = os.stat(tmp_path / "a/k.json").st_ino
        again = fs.write([entry("a", "k", 1)], revision=2)
        assert again.outcome is Outcome.UNCHANGED
        assert again.directory == first.directory
        assert timestamped(tmp_path) == [first.directory]
        assert os.stat(tmp_path / "a/k.json").st_ino == inode

    def test_adoption_by_a_second_agent(self, tmp_path: Path) -> None:
        """A new FileSet (a sidecar after the init container) finds the identical set and does nothing."""
        FileSet(tmp_path).write([entry("a", "k", 1), entry("b", "k", 2)], revision=5)
        sidecar = FileSet(tmp_path)
        applied = sidecar.current()
        assert applied is not None and applied.revision == 5
        again = sidecar.write([entry("b", "k", 2), entry("a", "k", 1)], revision=5)
        assert again.outcome is Outcome.UNCHANGED

    def test_changed_content_swaps_and_removes_old(self, tmp_path: Path) -> None:
        """New content: a new directory, ..data moved, the old directory removed."""
        fs = FileSet(tmp_path)
        first = fs.write([entry("a", "k", 1)])
        second = fs.write([entry("a", "k", 2)])
        assert second.outcome is Outcome.WRITTEN and second.directory != first.directory
        assert timestamped(tmp_path) == [second.directory]
        assert (tmp_path / "a/k.json").read_bytes() == b"2\n"

    def test_mode_change_is_a_change(self, tmp_path: Path) -> None:
        """The same bytes becoming secret produce a new set with mode 0600."""
        fs = FileSet(tmp_path)
        fs.write([entry("a", "k", 1)])
        assert fs.write([entry("a", "k", 1, secret=True)]).outcome is Outcome.WRITTEN
        assert stat.S_IMODE(os.stat(tmp_path / "a/k.json").st_mode) == 0o600

    def test_dropped_namespace_loses_its_link(self, tmp_path: Path) -> None:
        """A top-level name no longer in the set has its visible link removed; the app's files stay."""
        fs = FileSet(tmp_path)
        (tmp_path / "app-notes.txt").write_text("mine")
        fs.write([entry("a", "k", 1), entry("b", "k", 1)])
        fs.write([entry("a", "k", 1)])
        assert not os.path.lexists(tmp_path / "b")
        assert (tmp_path / "app-notes.txt").read_text() == "mine"

    def test_deleted_link_is_repaired(self, tmp_path: Path) -> None:
        """Unchanged content with a visible link deleted by someone: the link comes back, 'repaired'."""
        fs = FileSet(tmp_path)
        fs.write([entry("a", "k", 1)])
        os.unlink(tmp_path / "a")
        assert fs.write([entry("a", "k", 1)]).outcome is Outcome.REPAIRED
        assert (tmp_path / "a/k.json").read_bytes() == b"1\n"

    def test_edited_file_is_drift_and_gets_restored(self, tmp_path: Path) -> None:
        """A file edited in place shows as drifted and the next write restores it in a new set."""
        fs = FileSet(tmp_path)
        fs.write([entry("a", "k", 1), entry("a", "other", 2)])
        (tmp_path / "a/k.json").write_text("tampered")
        applied = fs.current()
        assert applied is not None and applied.drifted == ("a/k.json",)
        assert fs.write([entry("a", "k", 1), entry("a", "other", 2)]).outcome is Outcome.WRITTEN
        assert (tmp_path / "a/k.json").read_bytes() == b"1\n"

    def test_added_file_is_drift(self, tmp_path: Path) -> None:
        """A file added inside the set by someone else is drift, removed by the next write."""
        fs = FileSet(tmp_path)
        fs.write([entry("a", "k", 1)])
        (tmp_path / "a/extra.json").write_text("{}")
        applied = fs.current()
        assert applied is not None and applied.drifted == ("a/extra.json",)
        assert fs.write([entry("a", "k", 1)]).outcome is Outcome.WRITTEN
        assert not (tmp_path / "a/extra.json").exists()

    def test_empty_set(self, tmp_path: Path) -> None:
        """An empty set is valid: ..data points at an empty directory and old links go."""
        fs = FileSet(tmp_path)
        fs.write([entry("a", "k", 1)])
        assert fs.write([]).outcome is Outcome.WRITTEN
        assert not os.path.lexists(tmp_path / "a")


class TestStaging:
    def test_staged_set_is_complete_before_commit(self, tmp_path: Path) -> None:
        """Inside stage() the new files exist under the staged path while ..data still shows the old set."""
        fs = FileSet(tmp_path)
        fs.write([entry("a", "k", 1)])
        with fs.stage([entry("a", "k", 2)], revision=2) as staged:
            assert not staged.unchanged
            assert (staged.path / "a/k.json").read_bytes() == b"2\n"
            assert (tmp_path / "a/k.json").read_bytes() == b"1\n"
            result = staged.commit()
        assert result.outcome is Outcome.WRITTEN
        assert (tmp_path / "a/k.json").read_bytes() == b"2\n"

    def test_uncommitted_stage_is_discarded(self, tmp_path: Path) -> None:
        """A staged set that is not committed (a failed check) is removed; the old set stays."""
        fs = FileSet(tmp_path)
        first = fs.write([entry("a", "k", 1)])
        with fs.stage([entry("a", "k", 2)]) as staged:
            staged_path = staged.path
        assert not staged_path.exists()
        assert timestamped(tmp_path) == [first.directory]
        assert (tmp_path / "a/k.json").read_bytes() == b"1\n"

    def test_exception_in_stage_discards(self, tmp_path: Path) -> None:
        """An error inside the stage block removes the staged directory and propagates."""
        fs = FileSet(tmp_path)
        with pytest.raises(RuntimeError), fs.stage([entry("a", "k", 2)]):
            raise RuntimeError("check crashed")
        assert timestamped(tmp_path) == []
        assert fs.current() is None

    def test_commit_outside_block_refused(self, tmp_path: Path) -> None:
        """A StagedSet cannot be committed after its block ended."""
        fs = FileSet(tmp_path)
        with fs.stage([entry("a", "k", 2)]) as staged:
            pass
        with pytest.raises(FileSetError, match="inside its stage"):
            staged.commit()


class TestNames:
    @pytest.mark.parametrize(
        ("namespace", "key"),
        [("../etc", "k"), ("a", "../k"), ("a", "k/x"), ("/abs", "k"), ("a//b", "k"), ("A", "k"), ("a", "")],
    )
    def test_invalid_namespace_or_key(self, namespace: str, key: str) -> None:
        """Names go through validate_namespace/validate_key; traversal never reaches a path."""
        with pytest.raises(InvalidInput):
            FileSpec.for_entry(namespace, key, ".json", b"{}")

    @pytest.mark.parametrize(
        "path", ["../x", "..data/x", ".hidden", "a/../b", "/etc/passwd", "a//b", "a\\b", "a/\x00", "", "a/"]
    )
    def test_invalid_raw_paths(self, path: str) -> None:
        """Raw paths (template outputs) must be plain segments: no dots first, no separators tricks."""
        with pytest.raises(InvalidInput, match="invalid output path"):
            FileSpec(path, b"")

    def test_bad_suffix(self) -> None:
        """The suffix is a short extension, not a path."""
        with pytest.raises(InvalidInput, match="suffix"):
            FileSpec.for_entry("a", "k", "/../x", b"")

    def test_duplicate_and_file_dir_conflict(self, tmp_path: Path) -> None:
        """The same path twice, or a file that is also a directory of another, is refused."""
        fs = FileSet(tmp_path)
        with pytest.raises(InvalidInput, match="given twice"):
            fs.write([entry("a", "k", 1), entry("a", "k", 2)])
        with pytest.raises(InvalidInput, match="both a file and the directory"):
            fs.write([FileSpec("a", b""), entry("a", "k", 1)])

    def test_bad_dir_mode(self, tmp_path: Path) -> None:
        """A directory mode without owner rwx is refused at construction."""
        with pytest.raises(InvalidInput, match="dir_mode"):
            FileSet(tmp_path, dir_mode=0o555)


class TestPlantedLinks:
    def test_planted_visible_link_is_replaced_not_followed(self, tmp_path: Path) -> None:
        """The app points 'a' at a directory outside; the agent replaces the link and writes nothing there."""
        root, outside = tmp_path / "config", tmp_path / "outside"
        root.mkdir()
        outside.mkdir()
        os.symlink(outside, root / "a")
        FileSet(root).write([entry("a", "k", 1)])
        assert outside_tree(outside) == []
        assert os.readlink(root / "a") == "..data/a"

    def test_planted_temp_links_not_followed(self, tmp_path: Path) -> None:
        """Planted ..data_tmp / ..link_tmp links to outside are removed as links, the outside untouched."""
        root, outside = tmp_path / "config", tmp_path / "outside"
        root.mkdir()
        outside.mkdir()
        (outside / "keep").write_text("x")
        os.symlink(outside, root / "..data_tmp")
        os.symlink(outside / "keep", root / "..link_tmp")
        FileSet(root).write([entry("a", "k", 1)])
        assert outside_tree(outside) == ["keep"] and (outside / "keep").read_text() == "x"

    def test_planted_data_link_to_outside(self, tmp_path: Path) -> None:
        """A ..data link pointing outside is not read as the applied set and is replaced by the swap."""
        root, outside = tmp_path / "config", tmp_path / "outside"
        root.mkdir()
        (outside / "a").mkdir(parents=True)
        (outside / "a/k.json").write_text("1\n")
        os.symlink(outside, root / DATA_LINK)
        fs = FileSet(root)
        assert fs.current() is None
        assert fs.write([entry("a", "k", 1)]).outcome is Outcome.WRITTEN
        assert TIMESTAMPED_RE.fullmatch(os.readlink(root / DATA_LINK))
        assert outside_tree(outside) == ["a", "a/k.json"]

    def test_symlink_planted_inside_the_set(self, tmp_path: Path) -> None:
        """A managed file replaced by a symlink to a file outside: drift, never followed, never written."""
        root, outside = tmp_path / "config", tmp_path / "secret.txt"
        outside.write_text("host secret")
        fs = FileSet(root)
        fs.write([entry("a", "k", 1)])
        real = root / os.readlink(root / DATA_LINK) / "a/k.json"
        real.unlink()
        os.symlink(outside, real)
        applied = fs.current()
        assert applied is not None
        assert "a/k.json" in applied.drifted and "a/k.json" not in applied.files
        assert fs.write([entry("a", "k", 1)]).outcome is Outcome.WRITTEN
        assert outside.read_text() == "host secret"
        assert (root / "a/k.json").read_bytes() == b"1\n"

    def test_planted_lock_link_refused(self, tmp_path: Path) -> None:
        """A ..lock symlink is not followed: the write fails clearly and nothing is created outside."""
        root = tmp_path / "config"
        root.mkdir()
        os.symlink(tmp_path / "outside-lock", root / "..lock")
        with pytest.raises(FileSetError, match="lock file"):
            FileSet(root).write([entry("a", "k", 1)])
        assert not (tmp_path / "outside-lock").exists()

    def test_real_directory_at_a_managed_name(self, tmp_path: Path) -> None:
        """A real directory where a visible link belongs is reported by name, not overwritten."""
        (tmp_path / "a").mkdir()
        (tmp_path / "a/app-file").write_text("keep")
        with pytest.raises(FileSetError, match="real file or directory"):
            FileSet(tmp_path).write([entry("a", "k", 1)])
        assert (tmp_path / "a/app-file").read_text() == "keep"


class TestRecovery:
    def test_leftovers_removed_app_files_kept(self, tmp_path: Path) -> None:
        """recover() removes unreferenced timestamped dirs, temp links and dangling links only."""
        fs = FileSet(tmp_path)
        applied = fs.write([entry("a", "k", 1)])
        (tmp_path / "..2020_01_01_00_00_00.000000001" / "x").mkdir(parents=True)
        os.symlink("..2020_01_01_00_00_00.000000001", tmp_path / "..data_tmp")
        os.symlink("..data/gone", tmp_path / "gone")
        (tmp_path / "app.log").write_text("mine")
        os.symlink("/etc", tmp_path / "apps-own-link")
        removed = fs.recover()
        assert sorted(removed) == ["..2020_01_01_00_00_00.000000001", "..data_tmp", "gone"]
        assert timestamped(tmp_path) == [applied.directory]
        assert (tmp_path / "app.log").read_text() == "mine"
        assert os.readlink(tmp_path / "apps-own-link") == "/etc"
        assert fs.recover() == []

    def test_kill_9_during_applies_leaves_one_complete_set(self, tmp_path: Path) -> None:
        """A writer killed with SIGKILL mid-stream: after recover() exactly one complete set remains."""
        root = tmp_path / "config"
        writer = textwrap.dedent(
            f"""
            import json, sys
            from agent.fileset import FileSet, FileSpec
            from shared.logs import configure_logging
            configure_logging("warning")
            fs = FileSet({str(root)!r})
            for rev in range(1, 100_000):
                body = json.dumps({{"rev": rev, "pad": "x" * 2000}}).encode()
                files = [FileSpec.for_entry(ns, k, ".json", body) for ns in ("a", "b/c") for k in "xyz"]
                fs.write(files, revision=rev)
                if rev == 3:
                    print("ready", flush=True)
            """
        )
        for round_no in range(4):
            proc = subprocess.Popen(
                [sys.executable, "-c", writer], cwd=REPO, stdout=subprocess.PIPE, text=True
            )
            try:
                assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
                time.sleep(0.05 + 0.07 * round_no)
            finally:
                os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
            fs = FileSet(root)
            fs.recover()
            names = [n for n in os.listdir(root) if n.startswith("..")]
            assert sorted(names) == sorted([DATA_LINK, "..lock", os.readlink(root / DATA_LINK)])
            applied = fs.current()
            assert applied is not None and applied.drifted == ()
            revs = {json.loads(content)["rev"] for content in applied.contents().values()}
            assert revs == {applied.revision}
            assert len(applied.files) == 6


class TestTornReads:
    def test_reader_never_sees_partial_or_mixed_sets(self, tmp_path: Path) -> None:
        """A reader process parsing every file while 300 sets are applied sees no partial file, and
        reading through one resolution of ..data never mixes two revisions."""
        root = tmp_path / "config"
        fs = FileSet(root)
        paths = ["a/x.json", "a/y.json", "b/c/z.json", "t.conf"]

        def files(rev: int) -> list[FileSpec]:
            body = json.dumps({"rev": rev, "pad": "p" * (rev % 7) * 500}).encode()
            return [FileSpec(path, body) for path in paths]

        fs.write(files(0), revision=0)
        reader = textwrap.dedent(
            f"""
            import json, os, sys
            root, paths = {str(root)!r}, {paths!r}
            bad = mixed = sets = 0
            while not os.path.exists(os.path.join(root, "done")) and sets < 2_000_000:
                for p in paths:                       # through the visible names
                    try:
                        json.loads(open(os.path.join(root, p), "rb").read())
                    except FileNotFoundError:
                        pass
                    except ValueError:
                        bad += 1
                try:                                  # one resolution of ..data for the whole set
                    base = os.path.join(root, os.readlink(os.path.join(root, "..data")))
                    revs = {{json.loads(open(os.path.join(base, p), "rb").read())["rev"] for p in paths}}
                except FileNotFoundError:
                    continue                          # that set was replaced under us: read again
                except ValueError:
                    bad += 1
                    continue
                sets += 1
                mixed += len(revs) != 1
            print(json.dumps({{"bad": bad, "mixed": mixed, "sets": sets}}))
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", reader], stdout=subprocess.PIPE, text=True)
        try:
            for rev in range(1, 301):
                assert fs.write(files(rev), revision=rev).outcome is Outcome.WRITTEN
            (root / "done").write_text("")
            out, _ = proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        result = json.loads(out)
        assert result["bad"] == 0 and result["mixed"] == 0
        assert result["sets"] > 0
