"""The client's wire types and exceptions are kept in step with the OpenAPI document the gateway
serves (/openapi.json), by comparing them, not by trusting either side:

- every error code of the document's Error enum has its exception class in the client, and the
  client maps no code the document does not have;
- every JSON answer schema has its client model, whose fields are exactly the schema's
  properties (nested objects too), and the error body's fields land on the exception;
- answers generated from the schemas (every property, only the required ones, the nullable ones
  null) are read by the models, each property into the field of its name.

A code, a response field or an answer schema added on one side only fails here."""

from __future__ import annotations

import re
import uuid
from dataclasses import fields, is_dataclass
from datetime import datetime

import pytest
from authgateway_client import (
    ERROR_CLASSES,
    AuthFlow,
    AuthStatus,
    GatewayError,
    Health,
    InsufficientScope,
    ProviderConnection,
    RateLimited,
    RevokeResult,
    Token,
    UserProviders,
)
from authgateway_client._errors import error_from_response

from authgateway import errors as server_errors

#: Each answer schema of the document and the client model that reads it.
MODELS = {"InitResponse": AuthFlow, "StatusResponse": AuthStatus, "TokenResponse": Token,
          "ProvidersResponse": UserProviders, "RevokeResponse": RevokeResult, "Health": Health}
#: Objects inside an answer, by (schema, property), and the model of each.
NESTED = {("ProvidersResponse", "providers"): ProviderConnection}
#: The error body's fields (under "detail") and the exception attribute each lands in.
ERROR_FIELDS = {"error": "code", "message": "message", "auth_required": "auth_required"}
#: Fields of the error body that come with some codes only, and a class that exposes them
#: (provider_display_name comes with every AuthRequired).
ERROR_EXTRAS = {"retry_after": RateLimited, "missing_scopes": InsufficientScope,
                "provider_display_name": InsufficientScope}
STRINGS = {"date-time": "2030-01-02T03:04:05Z", "uuid": str(uuid.uuid4()),
           "uri": "https://provider.example/authorize?state=s", "email": "ada@example.com"}


@pytest.fixture
def document(client) -> dict:
    answer = client.get("/openapi.json")
    assert answer.status_code == 200
    return answer.get_json()


def resolve(schema: dict, document: dict) -> dict:
    """The schema a ``$ref`` names (a local one, ``#/components/...``), else the schema."""
    while "$ref" in schema:
        target = document
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        schema = target
    return schema


def kind(schema: dict) -> str | None:
    """The schema's type, ``null`` left out of a list of types."""
    types = schema.get("type")
    if isinstance(types, list):
        return next(t for t in types if t != "null")
    return types


def free_form(schema: dict) -> bool:
    """An object whose fields the document leaves open (the provider's Account): the client
    reads it as a mapping, not into a model."""
    return kind(schema) == "object" and "properties" not in schema


def nullable(schema: dict) -> bool:
    return isinstance(schema.get("type"), list) and "null" in schema["type"]


def sample(schema: dict, document: dict, mode: str = "full"):
    """An answer valid for the schema: every property ("full"), only the required ones
    ("required"), or every property with the nullable ones null ("nulls")."""
    schema = resolve(schema, document)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return schema["enum"][-1]
    if free_form(schema):
        return {"team_id": "T0123ABCD", "nested": {"sites": ["a", "b"]}}
    if kind(schema) == "object":
        properties = schema.get("properties", {})
        names = schema.get("required", []) if mode == "required" else list(properties)
        return {name: None if mode == "nulls" and nullable(properties[name])
                else sample(properties[name], document, mode) for name in names}
    if kind(schema) == "array":
        return [sample(schema["items"], document, mode)]
    if kind(schema) == "boolean":
        return True
    if kind(schema) in ("integer", "number"):
        return max(1, schema.get("minimum", 1))
    if kind(schema) == "string":
        return STRINGS.get(schema.get("format"), "some text")
    raise AssertionError(f"a schema this test cannot fill: {schema}")


def assert_read(value, read, where: str) -> None:
    """``read`` is what the client made of the JSON ``value``."""
    if value is None:
        assert read in (None, ()), where  # absent or null: no value, not a made-up one
    elif is_dataclass(read):
        for field in fields(read):
            assert_read(value.get(field.name), getattr(read, field.name), f"{where}.{field.name}")
    elif isinstance(read, tuple):
        assert len(read) == len(value), where
        for index, (item, read_item) in enumerate(zip(value, read, strict=True)):
            assert_read(item, read_item, f"{where}[{index}]")
    elif isinstance(read, datetime):
        assert read == datetime.fromisoformat(value) and read.tzinfo is not None, where
    else:
        assert read == value, where


def json_answers(document: dict) -> set[str]:
    """The schemas of every JSON answer of every operation, errors left out."""
    names = set()
    for operations in document["paths"].values():
        for operation in operations.values():
            for response in operation["responses"].values():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if "$ref" in schema:
                    names.add(schema["$ref"].rsplit("/", 1)[1])
    return names - {"Error"}


def error_statuses(document: dict) -> dict[str, set[int]]:
    """For each error code, the statuses whose Error answers the document says carry it."""
    statuses: dict[str, set[int]] = {}
    codes = error_detail(document)["properties"]["error"]["enum"]
    for operations in document["paths"].values():
        for operation in operations.values():
            for status, response in operation["responses"].items():
                schema = response.get("content", {}).get("application/json", {}).get("schema", {})
                if schema.get("$ref") != "#/components/schemas/Error":
                    continue
                for code in codes:
                    if re.search(rf"\b{code}\b", response["description"]):
                        statuses.setdefault(code, set()).add(int(status))
    return statuses


def schema_of(name: str, document: dict) -> dict:
    return document["components"]["schemas"][name]


def error_detail(document: dict) -> dict:
    return schema_of("Error", document)["properties"]["detail"]


# ---- error codes -------------------------------------------------------------------------------

def test_every_documented_error_code_has_its_class_and_no_other(document):
    codes = error_detail(document)["properties"]["error"]["enum"]
    assert set(codes) == set(ERROR_CLASSES)
    for code in codes:
        assert ERROR_CLASSES[code].code == code


def test_each_error_class_answers_with_a_status_the_document_gives_its_code(document):
    documented = error_statuses(document)
    assert documented  # the descriptions name their codes
    for code, statuses in documented.items():
        assert ERROR_CLASSES[code].status in statuses, (code, statuses)


def test_every_server_error_class_has_its_client_class():
    def subclasses(cls):
        for sub in cls.__subclasses__():
            yield sub
            yield from subclasses(sub)

    for server_class in (server_errors.GatewayError, *subclasses(server_errors.GatewayError)):
        client_class = ERROR_CLASSES[server_class.code]
        assert client_class.auth_required == server_class.auth_required, server_class
        if server_class is not server_errors.PayloadTooLargeError:  # 413, invalid_request too
            assert client_class.status == server_class.status, server_class


def test_every_field_of_the_error_body_lands_on_the_exception(document):
    detail = error_detail(document)
    assert set(detail["properties"]) == set(ERROR_FIELDS) | set(ERROR_EXTRAS)
    assert set(detail["required"]) <= set(ERROR_FIELDS)
    for code, cls in ERROR_CLASSES.items():
        body = sample(schema_of("Error", document), document, "required")
        body["detail"]["error"] = code
        error = error_from_response(cls.status, body)
        assert type(error) is cls
        for name, attribute in ERROR_FIELDS.items():
            assert getattr(error, attribute) == body["detail"][name], (code, name)
    for name, cls in ERROR_EXTRAS.items():
        body = sample(schema_of("Error", document), document)
        body["detail"]["error"] = cls.code
        error = error_from_response(cls.status, body)
        assert isinstance(error, cls)
        assert getattr(error, name) == body["detail"][name], name


# ---- answers and models ------------------------------------------------------------------------

def test_every_json_answer_has_its_model(document):
    assert json_answers(document) == set(MODELS)


def test_each_model_has_exactly_the_fields_of_its_schema(document):
    objects = set()
    for name, model in MODELS.items():
        properties = resolve(schema_of(name, document), document)["properties"]
        assert set(properties) == {f.name for f in fields(model)}, name
        for prop, prop_schema in properties.items():
            inner = resolve(prop_schema, document)
            if kind(inner) == "array":
                inner = resolve(inner["items"], document)
            if kind(inner) == "object" and not free_form(inner):
                objects.add((name, prop))
                assert set(inner["properties"]) == {f.name for f in fields(NESTED[name, prop])}
    assert objects == set(NESTED)


@pytest.mark.parametrize("mode", ["full", "required", "nulls"])
def test_each_model_reads_answers_made_from_its_schema(document, mode):
    for name, model in MODELS.items():
        answer = sample(schema_of(name, document), document, mode)
        read = model.from_json(answer)
        assert isinstance(read, model)
        assert_read(answer, read, name)


def test_an_error_of_an_unknown_code_is_still_a_gateway_error():
    """What a newer gateway's code looks like to this client until it learns the code."""
    error = error_from_response(409, {"detail": {"error": "some_new_code", "message": "m",
                                                 "auth_required": False}})
    assert type(error) is GatewayError and error.code == "some_new_code" and error.status == 409
