"""The Python client SDK of spar (sync and async). The CLI uses it too.

One module per service (:mod:`~spar.client.actor`, :mod:`~spar.client.refiner`,
:mod:`~spar.client.trainer`, :mod:`~spar.client.coordinator`,
:mod:`~spar.client.adapter_host`), each with a blocking and an asyncio client whose
methods are written once (:mod:`spar.client.base` says how). Enum options take short
names ("llm", "bfs", "dpo"; :mod:`spar.client.enums`). Errors come back as
:class:`spar.errors.SparError` subclasses carrying the server's status code and message.

    with ActorClient("127.0.0.1:50051") as actor:
        reply = actor.generate("Write a haiku about rain.", n=3)

Every client takes ``credentials`` (TLS; None: plaintext), ``token`` (sent as
``authorization: Bearer <token>``) and ``server_name``; :func:`spar.security.client_security`
builds them from the ``SPAR_TLS__*`` / ``SPAR_AUTH__*`` settings:

    with ActorClient(target, **client_security(Settings())) as actor: ...
"""

from spar.client.actor import ActorClient, AsyncActorClient
from spar.client.adapter_host import AdapterHostClient, AsyncAdapterHostClient, stage_request
from spar.client.base import CHANNEL_OPTIONS, AsyncClient, Call, Client, rpc_error
from spar.client.coordinator import AsyncCoordinatorClient, CoordinatorClient
from spar.client.refiner import (
    AsyncRefinerClient,
    ConstraintSpec,
    RefinerClient,
    constraint_messages,
    search_budget,
    search_options,
)
from spar.client.trainer import (
    AsyncTrainerClient,
    TrainerClient,
    dataset_record,
    submit_request,
    upload_requests,
)

__all__ = [
    "CHANNEL_OPTIONS",
    "ActorClient",
    "AdapterHostClient",
    "AsyncActorClient",
    "AsyncAdapterHostClient",
    "AsyncClient",
    "AsyncCoordinatorClient",
    "AsyncRefinerClient",
    "AsyncTrainerClient",
    "Call",
    "Client",
    "ConstraintSpec",
    "CoordinatorClient",
    "RefinerClient",
    "TrainerClient",
    "constraint_messages",
    "dataset_record",
    "rpc_error",
    "search_budget",
    "search_options",
    "stage_request",
    "submit_request",
    "upload_requests",
]
