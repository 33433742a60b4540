"""GET /docs: the OpenAPI document as a static, escaped HTML page (neuroq/api/docs_page.py)."""

from __future__ import annotations

import re

from starlette.testclient import TestClient

from neuroq.api.docs_page import render
from neuroq.api.openapi import openapi_document


def test_docs_page_lists_every_operation_of_the_document(app_client: TestClient) -> None:
    reply = app_client.get("http://testserver/docs", headers={"Authorization": ""})
    assert reply.status_code == 200
    assert reply.headers["content-type"].startswith("text/html")
    assert "default-src 'none'" in reply.headers["content-security-policy"]
    page = reply.text
    document = openapi_document()
    for path, item in document["paths"].items():
        for op in item.values():
            assert f'id="{op["operationId"]}"' in page, (path, op["operationId"])
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


def test_docs_page_is_self_contained() -> None:
    page = render(openapi_document())
    assert "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "nothing is fetched"


def test_docs_page_escapes_what_it_quotes() -> None:
    hostile = "<script>alert(1)</script>&"
    document = {
        "info": {"title": hostile, "description": hostile, "version": "1"},
        "paths": {
            "/x/{id}": {
                "get": {
                    "summary": hostile,
                    "operationId": '"><b>',
                    "parameters": [{"name": hostile, "in": "path", "description": hostile}],
                    "responses": {"200": {"description": hostile}},
                }
            }
        },
        "components": {"schemas": {"A": {"description": hostile}}},
    }
    page = render(document)
    assert "<script>" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;" in page
