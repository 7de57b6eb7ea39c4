"""The OpenAPI connectors opsbot ships: Neon, Lambda Cloud and Estuary, as data.

Each is an :class:`~tools.openapi.ApiSpec`: the vendor's published document (cut to the
operations below by ``scripts/openapi_subset.py``; Estuary's written from its control-plane API,
see ``tools/openapi_docs/estuary.json``), the allow-list with action names, tiers, previews and
target facts, how the token is sent, and the response fields that are secrets.

* ``neon`` — projects, branches, endpoints, operations; create branch 3, delete branch or
  project 4 (previewed: the approver sees the branch or project first).
* ``lambda`` — instances and instance types; launch 3, restart 3, terminate 4 (previewed).
* ``estuary`` — status of captures, materializations and collections (tier 0).
* ``qdrant`` — collections and their point counts, cluster and health, telemetry, snapshots;
  create a snapshot 3. Only metadata: no operation that returns points or payloads is allowed.
"""

from __future__ import annotations

from tools.base import Tier
from tools.openapi import Allow, ApiSpec, Preview, toolset

_BRANCH = {"project_id": "/project_id", "branch_id": "/branch_id"}
_ENDPOINT = {"project_id": "/project_id", "endpoint_id": "/endpoint_id"}
_INSTANCES = Preview(operation="getInstance", params={"id": "/body/instance_ids"})

NEON = ApiSpec(
    name="neon",
    description="Neon serverless Postgres: projects, branches, compute endpoints and operations; "
    "with approval, create branches, start or suspend endpoints, delete branches or projects.",
    document="neon.json",
    target_kind="neon_project",
    secret_fields=("password", "connection_uri"),
    env={"token_secret": "OPSBOT_NEON_TOKEN_SECRET", "base_url": "OPSBOT_NEON_API_URL"},
    allow={
        "listProjects": Allow(name="projects"),
        "getProject": Allow(name="project"),
        "listProjectBranches": Allow(name="branches"),
        "getProjectBranch": Allow(name="branch"),
        "createProjectBranch": Allow(name="create_branch",
                                     target={"parent": "/body/branch/parent_id"}),
        "deleteProjectBranch": Allow(name="delete_branch",
                                     preview=Preview(operation="getProjectBranch", params=_BRANCH)),
        "deleteProject": Allow(name="delete_project", preview=Preview(
            operation="getProject", params={"project_id": "/project_id"})),
        "listProjectEndpoints": Allow(name="endpoints"),
        "getProjectEndpoint": Allow(name="endpoint"),
        "startProjectEndpoint": Allow(name="start_endpoint"),
        "suspendProjectEndpoint": Allow(name="suspend_endpoint", preview=Preview(
            operation="getProjectEndpoint", params=_ENDPOINT)),
        "listProjectOperations": Allow(name="operations"),
        "getProjectOperation": Allow(name="operation"),
    },
)

LAMBDA = ApiSpec(
    name="lambda",
    description="Lambda Cloud GPU instances: list instances and instance types (with prices and "
    "capacity); with approval, launch, restart or terminate instances.",
    document="lambda.json",
    target_kind="lambda_instance",
    secret_fields=("jupyter_token", "jupyter_url"),
    env={"token_secret": "OPSBOT_LAMBDA_TOKEN_SECRET", "base_url": "OPSBOT_LAMBDA_API_URL"},
    allow={
        "listInstances": Allow(name="instances"),
        "getInstance": Allow(name="instance"),
        "listInstanceTypes": Allow(name="instance_types"),
        "launchInstance": Allow(name="launch", target={
            "region": "/body/region_name", "instance_type": "/body/instance_type_name"}),
        "restartInstance": Allow(name="restart", preview=_INSTANCES,
                                 target={"instance_ids": "/body/instance_ids"}),
        "terminateInstance": Allow(name="terminate", tier=Tier.PRODUCTION, preview=_INSTANCES,
                                   target={"instance_ids": "/body/instance_ids"}),
    },
)

ESTUARY = ApiSpec(
    name="estuary",
    description="Estuary Flow: status of captures, materializations and collections (shards, "
    "controller, connector status, whether a task is disabled).",
    document="estuary.json",
    target_kind="estuary_task",
    env={"base_url": "OPSBOT_ESTUARY_API_URL", "token_secret": "OPSBOT_ESTUARY_TOKEN_SECRET"},
    allow={"getCatalogStatus": Allow(name="status", target={"names": "/name"})},
)

NEON_TOOLSET = toolset(NEON)
LAMBDA_TOOLSET = toolset(LAMBDA)
ESTUARY_TOOLSET = toolset(ESTUARY)

QDRANT = ApiSpec(
    name="qdrant",
    description="Qdrant vector database: collections (size, status, point counts), cluster and "
    "health, telemetry, snapshots; with approval, create a collection snapshot. Metadata only: "
    "it never reads points or payloads.",
    document="qdrant.json",
    target_kind="qdrant_collection",
    env={"base_url": "QDRANT_URL", "token_secret": "OPSBOT_QDRANT_API_KEY_SECRET"},
    allow={
        "root": Allow(name="version"),
        "healthz": Allow(name="health"),
        "readyz": Allow(name="ready"),
        "cluster_status": Allow(name="cluster"),
        "telemetry": Allow(name="telemetry"),
        "get_collections": Allow(name="collections"),
        "get_collection": Allow(name="collection", target={"collection": "/collection_name"}),
        "collection_cluster_info": Allow(name="shards", target={"collection": "/collection_name"}),
        "count_points": Allow(name="count", tier=Tier.OBSERVE,
                              target={"collection": "/collection_name"}),
        "list_snapshots": Allow(name="snapshots", target={"collection": "/collection_name"}),
        "create_snapshot": Allow(name="create_snapshot", target={"collection": "/collection_name"},
                                 preview=Preview(operation="get_collection",
                                                 params={"collection_name": "/collection_name"})),
    },
)
QDRANT_TOOLSET = toolset(QDRANT)
