"""JSON Schema registry: named schemas, bindings to namespace/key globs, validation.

Schemas are checked with ``jsonschema`` (draft 2020-12 by default, or the
draft their ``$schema`` names). A write is validated against every schema
bound to its namespace and key; every violation is reported with its JSON
Pointer, not only the first.
"""

from __future__ import annotations

import fnmatch
import json
import re
import uuid
from typing import Any

import jsonschema
import referencing
import referencing.jsonschema
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError, ValidationError
from jsonschema.protocols import Validator
from referencing.exceptions import Unresolvable

from server.service import policy
from server.service.builtin_schemas import BUILTIN_SCHEMAS
from server.service.core import Core, Ctx
from server.service.policy import Action
from shared.errors import AlreadyExists, InvalidInput, NotFound, SchemaViolation
from shared.merge import pointer_escape
from shared.models import SchemaBinding, SchemaRecord

SCHEMA_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_.-]{0,99}", re.ASCII)
GLOB_RE = re.compile(r"[a-z0-9_/*?-]{1,500}", re.ASCII)


def _validator(schema: dict[str, Any]) -> Validator:
    cls = jsonschema.validators.validator_for(schema, default=Draft202012Validator)
    try:
        cls.check_schema(schema)
    except SchemaError as exc:
        where = "/" + "/".join(pointer_escape(str(p)) for p in exc.path) if exc.path else "(root)"
        raise InvalidInput(f"not a valid JSON Schema at {where}: {exc.message[:300]}") from None
    return cls(schema)


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def check_refs(schema: dict[str, Any]) -> None:
    """Every ``$ref`` must resolve inside the schema itself: nothing is fetched from anywhere."""
    spec = referencing.jsonschema.specification_with(
        str(schema.get("$schema", "")), default=referencing.jsonschema.DRAFT202012
    )
    resource = spec.create_resource(schema)
    base = resource.id() or ""
    resolver = referencing.Registry().with_resource(base, resource).resolver(base_uri=base)
    for ref in _refs(schema):
        try:
            resolver.lookup(ref)
        except Unresolvable:
            raise InvalidInput(
                f"$ref {ref[:200]!r} does not resolve within the schema; remote references are not "
                "fetched: put the definition under $defs"
            ) from None


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 120 else text[:117] + "..."


# Messages built only from the schema, never from the value: a resolved value can hold
# layers (or restricted data) the writer may not read, and jsonschema's own messages quote it.
_VALUE_FREE: dict[str, str] = {
    "type": "is not of type {}",
    "enum": "is not one of {}",
    "const": "is not {}",
    "minimum": "is less than the minimum of {}",
    "maximum": "is greater than the maximum of {}",
    "exclusiveMinimum": "is not greater than {}",
    "exclusiveMaximum": "is not less than {}",
    "multipleOf": "is not a multiple of {}",
    "minLength": "is shorter than {} characters",
    "maxLength": "is longer than {} characters",
    "pattern": "does not match the pattern {}",
    "format": "is not a valid {}",
    "minItems": "has fewer than {} items",
    "maxItems": "has more than {} items",
    "uniqueItems": "has repeated items",
    "minProperties": "has fewer than {} properties",
    "maxProperties": "has more than {} properties",
    "additionalProperties": "has properties the schema does not allow",
    "unevaluatedProperties": "has properties the schema does not allow",
    "propertyNames": "has a property name the schema does not allow",
}


def _value_free_message(error: ValidationError) -> str:
    if error.validator == "required":
        # jsonschema names the missing property, which comes from the schema
        return error.message
    template = _VALUE_FREE.get(str(error.validator))
    if template is not None:
        return template.format(_short(error.validator_value))
    return f"does not satisfy {error.validator!r}"


def violations_of(
    schema_name: str, schema: dict[str, Any], value: Any, *, quote_values: bool = True
) -> list[dict[str, str]]:
    """Every violation of ``schema`` by ``value``, sorted by JSON Pointer.

    ``quote_values=False`` words every message from the schema alone (what the server
    returns); the offline CLI check of a user's own file keeps jsonschema's messages.
    """
    validator = _validator(schema)
    found = []
    try:
        errors = list(validator.iter_errors(value))
    except Unresolvable as exc:
        raise InvalidInput(f"schema {schema_name!r} has a $ref that cannot be resolved: {exc}") from None
    for error in errors:
        pointer = "".join("/" + pointer_escape(str(p)) for p in error.absolute_path)
        found.append(
            {
                "pointer": pointer,
                "message": (error.message if quote_values else _value_free_message(error))[:500],
                "schema": schema_name,
                "schema_path": "/" + "/".join(pointer_escape(str(p)) for p in error.absolute_schema_path),
            }
        )
    return sorted(found, key=lambda v: (v["pointer"], v["schema_path"]))


class SchemaService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def _schema(self, tenant_id: str, name: str) -> SchemaRecord | None:
        if name in BUILTIN_SCHEMAS:
            return SchemaRecord(name, BUILTIN_SCHEMAS[name], True, "")
        return await self.core.storage.get_schema(tenant_id, name)

    async def list_schemas(self, ctx: Ctx) -> list[SchemaRecord]:
        await self.core.authorize(ctx, policy.Request(Action.SCHEMA_READ), "schemas")
        builtin = [SchemaRecord(n, s, True, "") for n, s in BUILTIN_SCHEMAS.items()]
        return builtin + await self.core.storage.list_schemas(ctx.principal.tenant_id)

    async def get_schema(self, ctx: Ctx, name: str) -> SchemaRecord:
        await self.core.authorize(ctx, policy.Request(Action.SCHEMA_READ), f"schema/{name[:100]}")
        record = await self._schema(ctx.principal.tenant_id, name)
        if record is None:
            raise NotFound(f"schema {name[:100]!r} not found")
        return record

    async def put_schema(self, ctx: Ctx, name: str, schema: Any) -> SchemaRecord:
        if not SCHEMA_NAME_RE.fullmatch(name):
            raise InvalidInput("schema name must match ^[a-z0-9][a-z0-9_.-]{0,99}$")
        await self.core.authorize(ctx, policy.Request(Action.SCHEMA_WRITE), f"schema/{name}")
        if name in BUILTIN_SCHEMAS:
            raise AlreadyExists(f"schema {name!r} is built in and cannot be replaced")
        if not isinstance(schema, dict):
            raise InvalidInput("'schema' must be a JSON object (a JSON Schema)")
        _validator(schema)
        check_refs(schema)
        record = SchemaRecord(name, schema, False, self.core.now_iso())
        tenant_id = ctx.principal.tenant_id
        async with self.core.storage.write(tenant_id) as tx:
            await tx.put_schema(tenant_id, record)
            await self.core.audit_in(tx, self.core.draft(ctx, "schema:put", f"schema/{name}", "ok"))
        return record

    async def list_bindings(self, ctx: Ctx) -> list[SchemaBinding]:
        await self.core.authorize(ctx, policy.Request(Action.SCHEMA_READ), "schema-bindings")
        return await self.core.storage.list_bindings(ctx.principal.tenant_id)

    async def bind(self, ctx: Ctx, schema_name: str, namespace_glob: str, key_glob: str) -> SchemaBinding:
        for label, glob in (("namespace", namespace_glob), ("key", key_glob)):
            if not isinstance(glob, str) or not GLOB_RE.fullmatch(glob):
                raise InvalidInput(f"{label} glob must use a-z, 0-9, '-', '_', '/', '*', '?'")
        await self.core.authorize(ctx, policy.Request(Action.SCHEMA_WRITE), "schema-bindings")
        tenant_id = ctx.principal.tenant_id
        if await self._schema(tenant_id, schema_name) is None:
            raise NotFound(f"schema {schema_name[:100]!r} not found")
        binding = SchemaBinding(
            "bnd_" + uuid.uuid4().hex[:16], schema_name, namespace_glob, key_glob, self.core.now_iso()
        )
        async with self.core.storage.write(tenant_id) as tx:
            await tx.insert_binding(tenant_id, binding)
            await self.core.audit_in(
                tx,
                self.core.draft(ctx, "schema:bind", f"schema-binding/{binding.id}", "ok", binding.to_dict()),
            )
        return binding

    async def unbind(self, ctx: Ctx, binding_id: str) -> None:
        await self.core.authorize(ctx, policy.Request(Action.SCHEMA_WRITE), "schema-bindings")
        tenant_id = ctx.principal.tenant_id
        async with self.core.storage.write(tenant_id) as tx:
            if not await tx.delete_binding(tenant_id, binding_id):
                raise NotFound(f"schema binding {binding_id[:40]!r} not found")
            await self.core.audit_in(
                tx, self.core.draft(ctx, "schema:unbind", f"schema-binding/{binding_id}", "ok")
            )

    async def bound(self, tenant_id: str, namespace: str, key: str) -> list[SchemaRecord]:
        """The schemas bound to (namespace, key), each once."""
        out: dict[str, SchemaRecord] = {}
        for binding in await self.core.storage.list_bindings(tenant_id):
            if binding.schema_name in out or not (
                fnmatch.fnmatchcase(namespace, binding.namespace_glob)
                and fnmatch.fnmatchcase(key, binding.key_glob)
            ):
                continue
            record = await self._schema(tenant_id, binding.schema_name)
            if record is not None:
                out[record.name] = record
        return list(out.values())


def check_resolved(schemas: list[SchemaRecord], resolved: dict[str, Any], subject: str) -> None:
    """Validate the value each environment would resolve to; raise listing every violation.

    ``resolved`` maps an environment name to its resolved value. A violation found in
    several environments is listed once, with all of them in ``environments``.
    """
    merged: dict[tuple[str, str, str, str], dict[str, Any]] = {}
    for environment, value in resolved.items():
        for schema in schemas:
            for v in violations_of(schema.name, schema.schema, value, quote_values=False):
                entry = merged.setdefault(
                    (v["pointer"], v["schema_path"], v["message"], v["schema"]), {**v, "environments": []}
                )
                entry["environments"].append(environment)
    violations = sorted(merged.values(), key=lambda v: (v["pointer"], v["schema_path"]))
    if violations:
        first = violations[0]
        raise SchemaViolation(
            f"{subject} would violate its schema in {len(violations)} place(s) "
            f"(resolved in {', '.join(first['environments'])}); first: "
            f"{first['pointer'] or '(root)'}: {first['message']}",
            violations,
        )
