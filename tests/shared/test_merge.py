"""Deep merge along an environment chain and the provenance of each leaf."""

from shared.merge import deep_merge


class TestDeepMerge:
    def test_objects_merge_and_scalars_replace(self) -> None:
        """Nested objects merge key by key; the higher layer's scalar wins."""
        value, _ = deep_merge([("global", {"a": {"x": 1, "y": 2}, "b": 1}), ("production", {"a": {"y": 3}})])
        assert value == {"a": {"x": 1, "y": 3}, "b": 1}

    def test_lists_replace_not_concatenate(self) -> None:
        """A list in a higher layer replaces the lower list whole."""
        value, prov = deep_merge([("global", {"fallback": ["a", "b"]}), ("staging", {"fallback": ["c"]})])
        assert value == {"fallback": ["c"]}
        assert prov == {"/fallback": "staging"}

    def test_object_replaces_scalar_and_back(self) -> None:
        """An object over a scalar replaces it, and provenance follows the replacement."""
        value, prov = deep_merge([("global", {"a": 1}), ("development", {"a": {"b": 2}}), ("production", {})])
        assert value == {"a": {"b": 2}}
        assert prov == {"/a/b": "development"}

    def test_provenance_names_every_leaf(self) -> None:
        """Each leaf's JSON pointer maps to the environment that supplied it, with ~ and / escaped."""
        _, prov = deep_merge(
            [("global", {"m": {"t": 0.2, "a/b": 1, "c~d": 2}}), ("production", {"m": {"t": 0.5}})]
        )
        assert prov == {"/m/t": "production", "/m/a~1b": "global", "/m/c~0d": "global"}

    def test_inputs_are_not_mutated(self) -> None:
        """Merging copies: the layers passed in are unchanged afterwards."""
        low, high = {"a": {"x": [1]}}, {"a": {"y": 2}}
        value, _ = deep_merge([("global", low), ("production", high)])
        value["a"]["x"].append(9)
        assert low == {"a": {"x": [1]}} and high == {"a": {"y": 2}}
