"""GET /docs: the OpenAPI document of /openapi.json as one static HTML page, rendered here.

Self-contained on purpose: no script, no CDN, nothing fetched, so it works on a server with no
internet access and under a strict Content-Security-Policy. Every text taken from the document is
escaped, although the document is ours: descriptions quote user-facing rules with `<` and `&`.
"""

from __future__ import annotations

import json
from functools import cache
from html import escape
from typing import Any

from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from neuroq.api.openapi import openapi_document

METHODS = ("get", "post", "put", "patch", "delete")
#: the page's only style; no script at all
_STYLE = """
body{font:15px/1.45 system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;color:#222}
h2{margin-top:2.5rem;border-bottom:1px solid #ccc}
section{border:1px solid #ddd;border-radius:6px;padding:.5rem 1rem;margin:1rem 0}
.m{font:bold 13px monospace;padding:2px 6px;border-radius:3px;background:#e8eef8}
code,pre{font:13px monospace}pre{background:#f6f6f6;padding:.5rem;overflow-x:auto}
table{border-collapse:collapse}td,th{border:1px solid #ddd;padding:2px 8px;text-align:left}
"""
_CSP = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'"


def _schema_text(schema: Any) -> str:
    """A schema as text: a reference by its name (linked), anything else as indented JSON."""
    if isinstance(schema, dict) and set(schema) == {"$ref"}:
        name = str(schema["$ref"]).rsplit("/", 1)[-1]
        return f'<a href="#schema-{escape(name)}">{escape(name)}</a>'
    return f"<pre>{escape(json.dumps(schema, indent=2, ensure_ascii=False))}</pre>"


def _content(content: dict[str, Any]) -> str:
    parts = []
    for media, body in content.items():
        parts.append(f"<div><code>{escape(media)}</code> {_schema_text(body.get('schema', {}))}")
        parts.append("</div>")
    return "".join(parts)


def _parameters(params: list[dict[str, Any]]) -> str:
    if not params:
        return ""
    rows = "".join(
        f"<tr><td><code>{escape(p['name'])}</code></td><td>{escape(p['in'])}</td>"
        f"<td>{'yes' if p.get('required') else 'no'}</td>"
        f"<td>{escape(p.get('description', ''))}</td>"
        f"<td><code>{escape(json.dumps(p.get('schema', {}), ensure_ascii=False))}</code></td></tr>"
        for p in params
    )
    head = "<tr><th>name</th><th>in</th><th>required</th><th>meaning</th><th>schema</th></tr>"
    return f"<h4>Parameters</h4><table>{head}{rows}</table>"


def _operation(path: str, method: str, op: dict[str, Any]) -> str:
    anchor = escape(op.get("operationId", f"{method}-{path}"))
    parts = [
        f'<section id="{anchor}"><h3><span class="m">{method.upper()}</span> '
        f"<code>{escape(path)}</code></h3><p>{escape(op.get('summary', ''))}</p>",
        _parameters(op.get("parameters", [])),
    ]
    body = op.get("requestBody")
    if body:
        parts.append(f"<h4>Body</h4>{_content(body.get('content', {}))}")
    parts.append("<h4>Replies</h4><table>")
    for code, reply in op.get("responses", {}).items():
        parts.append(
            f"<tr><td><code>{escape(code)}</code></td><td>{escape(reply.get('description', ''))}"
            f"{_content(reply.get('content', {}))}</td></tr>"
        )
    parts.append("</table></section>")
    return "".join(parts)


def render(document: dict[str, Any]) -> str:
    """The whole page for `document` (an OpenAPI 3.1 document)."""
    info = document.get("info", {})
    title = escape(info.get("title", "API"))
    out = [
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{title}</title>',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<style>{_STYLE}</style></head><body><h1>{title}</h1>",
        f"<p>{escape(info.get('description', ''))} Version {escape(info.get('version', ''))}. "
        'The same document as JSON: <a href="/openapi.json">/openapi.json</a>.</p>',
    ]
    for name, scheme in document.get("components", {}).get("securitySchemes", {}).items():
        out.append(
            f"<p>Authentication (<code>{escape(name)}</code>): "
            f"{escape(scheme.get('description', ''))}</p>"
        )
    out.append("<h2>Routes</h2><ul>")
    operations = []
    for path, item in document.get("paths", {}).items():
        for method in METHODS:
            if method in item:
                op = item[method]
                anchor = escape(op.get("operationId", f"{method}-{path}"))
                out.append(
                    f'<li><a href="#{anchor}"><span class="m">{method.upper()}</span> '
                    f"<code>{escape(path)}</code></a> {escape(op.get('summary', ''))}</li>"
                )
                operations.append(_operation(path, method, op))
    out.append("</ul>")
    out.extend(operations)
    out.append("<h2>Schemas</h2>")
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        out.append(f'<section id="schema-{escape(name)}"><h3>{escape(name)}</h3>')
        out.append(f"{_schema_text(schema)}</section>")
    out.append("</body></html>")
    return "".join(out)


@cache
def _page() -> str:
    return render(openapi_document())


async def docs(request: Request) -> Response:
    return HTMLResponse(_page(), headers={"Content-Security-Policy": _CSP})
