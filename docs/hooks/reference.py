"""MkDocs hook: the CLI and HTTP API reference pages and the methods table, generated from the code at build time.

A page that contains ``<!-- oblivio:cli-reference -->`` gets every command's ``--help`` (walked from the typer
app's click tree); ``<!-- oblivio:http-reference -->`` gets the routes, parameters, bodies and status codes of
the ledger API's OpenAPI schema (``oblivio.api.create_app``, built without touching a database);
``<!-- oblivio:methods-table -->`` gets the registered methods with their needs, papers and defaults. Nothing here
needs the network or JavaScript.
"""
from __future__ import annotations

import json
from typing import Any

CLI_MARKER = "<!-- oblivio:cli-reference -->"
HTTP_MARKER = "<!-- oblivio:http-reference -->"
METHODS_MARKER = "<!-- oblivio:methods-table -->"
WIDTH = 100


def on_page_markdown(markdown: str, page, config, files, **kwargs) -> str:
    if CLI_MARKER in markdown:
        markdown = markdown.replace(CLI_MARKER, cli_reference())
    if METHODS_MARKER in markdown:
        markdown = markdown.replace(METHODS_MARKER, methods_table())
    if HTTP_MARKER in markdown:
        markdown = markdown.replace(HTTP_MARKER, http_reference())
    return markdown


# ---------------------------------------------------------------- CLI


def command_tree():
    """(path, click command, click context) for ``oblivio`` and every subcommand, depth first."""
    import typer

    from oblivio.cli import app

    root = typer.main.get_command(app)
    out = []

    def walk(cmd, path: list[str], parent) -> None:
        ctx = cmd.context_class(cmd, info_name=path[-1], parent=parent, terminal_width=WIDTH, max_content_width=WIDTH)
        out.append((path, cmd, ctx))
        if hasattr(cmd, "list_commands"):
            for name in cmd.list_commands(ctx):
                walk(cmd.get_command(ctx, name), path + [name], ctx)

    walk(root, ["oblivio"], None)
    return out


def cli_reference() -> str:
    parts = []
    for path, cmd, ctx in command_tree():
        level = "#" * min(len(path) + 1, 4)
        summary = (cmd.get_short_help_str(limit=200) if len(path) > 1 else "").strip()
        parts.append(f"{level} `{' '.join(path)}`\n")
        if summary:
            parts.append(f"{summary}\n")
        parts.append("```text\n" + cmd.get_help(ctx).rstrip() + "\n```\n")
    return "\n".join(parts)


def methods_table() -> str:
    """The registered methods: name, the data each needs besides the forget set, its paper, its defaults."""
    import dataclasses

    from oblivio.methods import available_methods, get_method

    rows = ["| method | needs besides the forget set | paper | default options |", "|---|---|---|---|"]
    for name in available_methods():
        m = get_method(name)
        defaults = ", ".join(f"`{k}={v}`" for k, v in dataclasses.asdict(m.config).items())
        rows.append(f"| `{name}` | {', '.join(sorted(m.requires)) or 'nothing'} | {_cell(m.paper)} | {_cell(defaults)} |")
    return "\n".join(rows) + "\n"


# ---------------------------------------------------------------- HTTP API


def openapi_schema() -> dict:
    from oblivio.api import create_app

    return create_app(db="sqlite:///:memory:", token=None).openapi()


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ").strip()


def schema_type(schema: dict) -> str:
    """A short type string: ``integer``, ``array of integer``, ``RequestOut``, ``string (received | closed)``."""
    if not schema:
        return "any"
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"
    if "anyOf" in schema or "oneOf" in schema:
        options = [schema_type(s) for s in schema.get("anyOf", schema.get("oneOf", []))]
        return " or ".join(o for o in options if o != "null") + (" or null" if "null" in options else "")
    if "enum" in schema:
        values = " | ".join(map(str, schema["enum"]))
        return f"{schema.get('type', 'string')} ({values})"
    if schema.get("type") == "array":
        return "array of " + schema_type(schema.get("items", {}))
    return str(schema.get("type", "any"))


def constraints(schema: dict) -> str:
    keys = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<",
            "minLength": "length >=", "maxLength": "length <=", "minItems": "items >=", "maxItems": "items <=",
            "pattern": "pattern"}
    found = [f"{label} `{schema[k]}`" if k == "pattern" else f"{label} {schema[k]}" for k, label in keys.items() if k in schema]
    if "default" in schema:
        found.append(f"default `{json.dumps(schema['default'])}`")
    return ", ".join(found)


def http_reference() -> str:
    spec = openapi_schema()
    lines = [f"Generated from the OpenAPI schema of **{spec['info']['title']}** {spec['info']['version']}, which a "
             "running server also serves at `/openapi.json`.\n", _cell(spec["info"].get("description", "")) + "\n"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            lines.append(f"### `{method.upper()} {path}`\n")
            lines.append(f"**{op.get('summary', '')}.** {op.get('description', '').strip()}\n")
            auth = "bearer token (`Authorization: Bearer ...`)" if op.get("security") else "none"
            lines.append(f"Authentication: {auth}.\n")
            if op.get("parameters"):
                lines.append("| parameter | in | required | type | constraints | description |\n|---|---|---|---|---|---|")
                for p in op["parameters"]:
                    s = p.get("schema", {})
                    lines.append(f"| `{p['name']}` | {p['in']} | {'yes' if p.get('required') else 'no'} | "
                                 f"{_cell(schema_type(s))} | {_cell(constraints(s))} | "
                                 f"{_cell(p.get('description', s.get('description', '')))} |")
                lines.append("")
            body = op.get("requestBody")
            if body:
                for ctype, content in body.get("content", {}).items():
                    lines.append(f"Request body ({'required' if body.get('required') else 'optional'}, `{ctype}`): "
                                 f"{schema_type(content.get('schema', {}))}\n")
            lines.append("| status | meaning | body |\n|---|---|---|")
            for status, resp in op.get("responses", {}).items():
                bodies = ", ".join(f"`{ct}` {schema_type(c.get('schema', {}))}" if c.get("schema") else f"`{ct}`"
                                   for ct, c in resp.get("content", {}).items())
                lines.append(f"| {status} | {_cell(resp.get('description', ''))} | {_cell(bodies)} |")
            lines.append("")
    lines.append("## Schemas\n")
    for name, schema in spec.get("components", {}).get("schemas", {}).items():
        lines.append(f"### {name}\n")
        if schema.get("description"):
            lines.append(_cell(schema["description"]) + "\n")
        required = set(schema.get("required", []))
        props = schema.get("properties", {})
        if props:
            lines.append("| field | type | required | constraints | description |\n|---|---|---|---|---|")
            for field, s in props.items():
                lines.append(f"| `{field}` | {_cell(schema_type(s))} | {'yes' if field in required else 'no'} | "
                             f"{_cell(constraints(s))} | {_cell(s.get('description', ''))} |")
            lines.append("")
    return "\n".join(lines)
