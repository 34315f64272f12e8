"""The fake ZIS server on 127.0.0.1 for tests, the demo and the benchmarks (``server``),
the faults it can answer with (``faults``), its sample data (``samples``), and
``python -m inventory.testing`` (``__main__``). It imports only the pure modules."""

from .faults import (
    RATE_LIMIT_PAGE,
    Fault,
    malformed,
    pagination_loop,
    rate_limited,
    server_error,
)
from .samples import (
    ACCOUNT,
    MASKED_SECRET,
    REDIRECTED_TOKEN_URL,
    SAMPLE_CLIENTS,
    SECRET_FIELDS,
    SENTINEL,
    add_sample_clients,
    change_account,
    redirect_client,
    registry_item,
    sample_account,
    sample_client,
    sample_item,
    sample_registry,
)
from .server import REGISTRY, FakeIntegration, FakeRegistry, FakeZisServer, Request

__all__ = [
    "ACCOUNT",
    "MASKED_SECRET",
    "RATE_LIMIT_PAGE",
    "REDIRECTED_TOKEN_URL",
    "REGISTRY",
    "SAMPLE_CLIENTS",
    "SECRET_FIELDS",
    "SENTINEL",
    "FakeIntegration",
    "FakeRegistry",
    "FakeZisServer",
    "Fault",
    "Request",
    "add_sample_clients",
    "change_account",
    "malformed",
    "pagination_loop",
    "rate_limited",
    "redirect_client",
    "registry_item",
    "sample_account",
    "sample_client",
    "sample_item",
    "sample_registry",
    "server_error",
]
