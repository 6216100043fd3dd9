"""HTTP routes from `google.api.http` annotations: templates, variables, body and streaming.

Routes are built from the service descriptor, never written per endpoint, so the REST
surface cannot drift from the gRPC one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from google.api import annotations_pb2, http_pb2
from google.protobuf.descriptor import MethodDescriptor, ServiceDescriptor

_VARIABLE = re.compile(r"\{([a-zA-Z0-9_.]+)(?:=([^}]*))?\}")


@dataclass(frozen=True)
class Route:
    http_method: str
    template: str
    pattern: re.Pattern[str]
    variables: tuple[str, ...]
    body: str
    method: MethodDescriptor

    @property
    def server_streaming(self) -> bool:
        return bool(self.method.server_streaming)

    def match(self, http_method: str, path: str) -> dict[str, str] | None:
        if http_method != self.http_method:
            return None
        found = self.pattern.fullmatch(path)
        if found is None:
            return None
        return {name: found.group(f"v{i}") for i, name in enumerate(self.variables)}


def _compile(template: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    variables: list[str] = []
    regex = ""
    position = 0
    for found in _VARIABLE.finditer(template):
        regex += re.escape(template[position : found.start()])
        segments = found.group(2) or "*"
        if "**" in segments:
            piece = ".+"
        else:
            piece = "/".join(r"[^/:]+" if s == "*" else re.escape(s) for s in segments.split("/"))
        regex += f"(?P<v{len(variables)}>{piece})"
        variables.append(found.group(1))
        position = found.end()
    regex += re.escape(template[position:])
    return re.compile(regex), tuple(variables)


def _rules(rule: http_pb2.HttpRule) -> list[http_pb2.HttpRule]:
    return [rule, *rule.additional_bindings]


def routes_for(service: ServiceDescriptor) -> list[Route]:
    """Every HTTP binding of every RPC of the service; literal-heavy templates first."""
    routes: list[Route] = []
    for method in service.methods:
        top = method.GetOptions().Extensions[annotations_pb2.http]
        for rule in _rules(top):
            kind = rule.WhichOneof("pattern")
            if kind is None:
                continue
            if kind == "custom":
                verb, template = rule.custom.kind.upper(), rule.custom.path
            else:
                verb, template = kind.upper(), getattr(rule, kind)
            pattern, variables = _compile(template)
            routes.append(Route(verb, template, pattern, variables, rule.body, method))
    routes.sort(key=lambda r: (-len(_VARIABLE.sub("", r.template)), r.template))
    return routes
