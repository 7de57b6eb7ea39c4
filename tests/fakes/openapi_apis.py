"""Neon, Lambda Cloud and Estuary, emulated from the documents their connectors ship.

Each fake keeps a little state (projects and branches; instances; live specs) and answers the
operations opsbot's allow-lists use, shaped as the vendor's document says (the emulator checks
every reply against it). Fixtures ``neon_api``, ``lambda_api`` and ``estuary_api`` start one per
test and fail the test if any reply drifted from the document.
"""

from __future__ import annotations

import copy
import itertools
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes.openapi_api import ApiCall, OpenApiEmulator

NEON_TOKEN = "neon_canary_token_7d1e"
LAMBDA_TOKEN = "secret_lambda_canary_9a4c"
ESTUARY_TOKEN = "estuary_canary_jwt_2b8f"
ESTUARY_REST_KEY = "estuary-public-anon-key"
ROLE_PASSWORD = "npg_canary_password_51ab"
JUPYTER_TOKEN = "jupyter_canary_0c3d"
QDRANT_KEY = "qdrant_canary_key_6e2a"
WHEN = "2026-01-02T03:04:05Z"
_ids = itertools.count(1)


class Neon:
    """Projects, branches, endpoints and operations, enough for the neon allow-list."""

    def __init__(self) -> None:
        self.projects: dict[str, dict[str, Any]] = {}
        self.branches: dict[str, dict[str, Any]] = {}
        self.operations: list[dict[str, Any]] = []

    def add_project(self, project_id: str, name: str) -> str:
        self.projects[project_id] = _neon_project(project_id, name)
        return self.add_branch(project_id, "main", default=True)

    def add_branch(self, project_id: str, name: str, parent: str | None = None,
                   default: bool = False) -> str:
        branch_id = f"br-{name}-{next(_ids)}"
        self.branches[branch_id] = _neon_branch(branch_id, project_id, name, parent, default)
        return branch_id

    def handlers(self) -> dict[str, Any]:
        return {
            "listProjects": lambda c: (200, {"applications": {}, "integrations": {},
                                             "projects": [self._item(p) for p in
                                                          self.projects.values()]}),
            "getProject": lambda c: self._with_project(c, lambda p: (200, {"project": p})),
            "deleteProject": self._delete_project,
            "listProjectBranches": lambda c: self._with_project(c, lambda p: (200, {
                "branches": [b for b in self.branches.values() if b["project_id"] == p["id"]]})),
            "getProjectBranch": lambda c: self._with_branch(c, lambda b: (200, {"branch": b})),
            "createProjectBranch": self._create_branch,
            "deleteProjectBranch": self._delete_branch,
            "listProjectOperations": lambda c: (200, {"operations": self.operations,
                                                      "pagination": {"cursor": ""}}),
        }

    def _item(self, project: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in project.items() if k not in _PROJECT_ONLY}

    def _with_project(self, call: ApiCall, then) -> tuple[int, Any]:
        project = self.projects.get(call.path_params["project_id"])
        return then(project) if project else (404, {"code": "", "message": "project not found"})

    def _with_branch(self, call: ApiCall, then) -> tuple[int, Any]:
        branch = self.branches.get(call.path_params["branch_id"])
        if branch is None or branch["project_id"] != call.path_params["project_id"]:
            return 404, {"code": "", "message": "branch not found"}
        return then(branch)

    def _operation(self, project_id: str, branch_id: str, action: str) -> dict[str, Any]:
        op = {"id": str(uuid.uuid4()), "project_id": project_id, "branch_id": branch_id,
              "action": action, "status": "running", "failures_count": 0,
              "created_at": WHEN, "updated_at": WHEN, "total_duration_ms": 0}
        self.operations.append(op)
        return op

    def _create_branch(self, call: ApiCall) -> tuple[int, Any]:
        project_id = call.path_params["project_id"]
        if project_id not in self.projects:
            return 404, {"code": "", "message": "project not found"}
        wanted = (call.body or {}).get("branch", {})
        branch_id = self.add_branch(project_id, wanted.get("name") or "branch",
                                    wanted.get("parent_id"))
        role = {"branch_id": branch_id, "name": "app", "password": ROLE_PASSWORD,
                "created_at": WHEN, "updated_at": WHEN}
        uri = f"postgresql://app:{ROLE_PASSWORD}@ep-x.neon.tech/app"
        return 201, {
            "branch": self.branches[branch_id], "endpoints": [], "roles": [role],
            "operations": [self._operation(project_id, branch_id, "create_branch")],
            "databases": [],
            "connection_uris": [{"connection_uri": uri, "connection_parameters": {
                "database": "app", "password": ROLE_PASSWORD, "role": "app",
                "host": "ep-x.neon.tech", "pooler_host": "ep-x-pooler.neon.tech"}}],
        }

    def _delete_branch(self, call: ApiCall) -> tuple[int, Any]:
        def delete(branch: dict[str, Any]) -> tuple[int, Any]:
            del self.branches[branch["id"]]
            op = self._operation(branch["project_id"], branch["id"], "delete_timeline")
            return 200, {"branch": branch, "operations": [op]}

        return self._with_branch(call, delete)

    def _delete_project(self, call: ApiCall) -> tuple[int, Any]:
        def delete(project: dict[str, Any]) -> tuple[int, Any]:
            del self.projects[project["id"]]
            return 200, {"project": project}

        return self._with_project(call, delete)


_PROJECT_ONLY = {"consumption_period_end", "consumption_period_start", "active_time_seconds",
                 "compute_time_seconds", "written_data_bytes", "data_transfer_bytes",
                 "data_storage_bytes_hour", "history_retention_seconds"}


def _neon_project(project_id: str, name: str) -> dict[str, Any]:
    return {
        "id": project_id, "name": name, "platform_id": "aws", "region_id": "aws-us-east-2",
        "pg_version": 16, "proxy_host": "us-east-2.aws.neon.tech",
        "branch_logical_size_limit": 0, "branch_logical_size_limit_bytes": 0,
        "store_passwords": True, "cpu_used_sec": 0, "active_time": 0, "provisioner": "k8s-neonvm",
        "creation_source": "console", "created_at": WHEN, "updated_at": WHEN,
        "owner_id": "owner-1", "history_retention_seconds": 86400,
        "consumption_period_end": WHEN, "consumption_period_start": WHEN,
        "active_time_seconds": 0, "compute_time_seconds": 0, "written_data_bytes": 0,
        "data_transfer_bytes": 0, "data_storage_bytes_hour": 0,
    }


def _neon_branch(branch_id: str, project_id: str, name: str, parent: str | None,
                 default: bool) -> dict[str, Any]:
    branch = {
        "id": branch_id, "project_id": project_id, "name": name, "current_state": "ready",
        "state_changed_at": WHEN, "creation_source": "console", "created_at": WHEN,
        "updated_at": WHEN, "default": default, "protected": False, "cpu_used_sec": 0,
        "active_time_seconds": 0, "compute_time_seconds": 0, "written_data_bytes": 0,
        "data_transfer_bytes": 0,
    }
    return branch | ({"parent_id": parent} if parent else {})


class Lambda:
    """Instances and instance types, enough for the lambda allow-list."""

    def __init__(self) -> None:
        self.instances: dict[str, dict[str, Any]] = {}

    def add_instance(self, name: str, status: str = "active") -> str:
        instance_id = f"{next(_ids):032x}"
        self.instances[instance_id] = {
            "id": instance_id, "name": name, "status": status, "ip": "198.51.100.2",
            "ssh_key_names": ["ops"], "file_system_names": [], "is_reserved": False,
            "region": {"name": "us-west-1", "description": "California, USA"},
            "instance_type": _LAMBDA_TYPE, "jupyter_token": JUPYTER_TOKEN,
            "jupyter_url": f"https://jupyter.example/?token={JUPYTER_TOKEN}",
            "actions": {k: {"available": True} for k in
                        ("migrate", "rebuild", "restart", "cold_reboot", "terminate")},
        }
        return instance_id

    def handlers(self) -> dict[str, Any]:
        return {
            "listInstances": lambda c: (200, {"data": list(self.instances.values())}),
            "getInstance": self._get,
            "listInstanceTypes": lambda c: (200, {"data": {"gpu_1x_a10": {
                "instance_type": _LAMBDA_TYPE, "regions_with_capacity_available": [
                    {"name": "us-west-1", "description": "California, USA"}]}}}),
            "terminateInstance": self._terminate,
        }

    def _get(self, call: ApiCall) -> tuple[int, Any]:
        found = self.instances.get(call.path_params["id"])
        if found is None:
            return 404, {"error": {"code": "global/object-does-not-exist",
                                   "message": "Instance not found"}}
        return 200, {"data": found}

    def _terminate(self, call: ApiCall) -> tuple[int, Any]:
        ids = call.body["instance_ids"]
        missing = [i for i in ids if i not in self.instances]
        if missing:
            return 404, {"error": {"code": "global/object-does-not-exist",
                                   "message": f"Instance {missing[0]} not found"}}
        gone = [self.instances.pop(i) | {"status": "terminating"} for i in ids]
        return 200, {"data": {"terminated_instances": gone}}


_LAMBDA_TYPE = {
    "name": "gpu_1x_a10", "description": "1x A10 (24 GB PCIe)",
    "gpu_description": "A10 (24 GB PCIe)",
    "price_cents_per_hour": 75, "specs": {"vcpus": 30, "memory_gib": 200, "storage_gib": 1400,
                                          "gpus": 1},
}


class Estuary:
    """Live specs and their status; for the publish document (``estuary_publish.json``), drafts
    and publications: a publication is ``queued`` at its first poll, then applies its draft (the
    staged spec replaces the live one) unless ``fail_next`` says why not, or the draft expected
    another publication than the live one (``expectPubIdMismatch``, as Estuary answers)."""

    def __init__(self) -> None:
        self.specs: dict[str, dict[str, Any]] = {}
        self.live: dict[str, dict[str, Any]] = {}  # catalog name -> live_specs row
        self.drafts: dict[str, dict[str, Any]] = {}  # id -> {detail, specs: {name: draft spec}}
        self.publications: dict[str, dict[str, Any]] = {}
        self.fail_next: tuple[str, str] | None = None  # (job status, error detail)

    def add(self, name: str, spec_type: str, disabled: bool = False, error: str | None = None
            ) -> None:
        pub = f"{next(_ids):016x}"
        self.live[name] = {"catalog_name": name, "spec_type": spec_type, "last_pub_id": pub,
                           "spec": {"endpoint": {"connector": {"image": "source-postgres:v1"}},
                                    "bindings": [], **({"shards": {"disable": True}}
                                                       if disabled else {})}}
        self._status_row(name, error)

    def disabled(self, name: str) -> bool:
        return bool(self.live[name]["spec"].get("shards", {}).get("disable"))

    def _status_row(self, name: str, error: str | None = None) -> None:
        live, disabled = self.live[name], self.disabled(name)
        status = "error" if error else "taskDisabled" if disabled else "ok"
        message = error or ("Task shards are disabled" if disabled else "Ok")
        self.specs[name] = {
            "catalog_name": name, "live_spec_id": f"{next(_ids):016x}",
            "spec_type": live["spec_type"], "last_pub_id": live["last_pub_id"],
            "last_build_id": live["last_pub_id"], "live_spec_updated_at": WHEN,
            "controller_updated_at": WHEN, "controller_failures": 1 if error else 0,
            "controller_error": error, "summary": {"status": status, "message": message},
        } | ({"disabled": True} if disabled else {})

    def handlers(self) -> dict[str, Any]:
        return {"getCatalogStatus": self._status}

    def publish_handlers(self) -> dict[str, Any]:
        return {"getLiveSpecs": self._live_specs, "createDraft": self._create_draft,
                "deleteDraft": self._delete_draft, "upsertDraftSpec": self._stage,
                "createPublication": self._publish, "getPublications": self._poll,
                "getDraftErrors": self._errors}

    def _live_specs(self, call: ApiCall) -> tuple[int, Any]:
        name = (call.param("catalog_name") or "").removeprefix("eq.")
        return 200, [copy.deepcopy(self.live[name])] if name in self.live else []

    def _create_draft(self, call: ApiCall) -> tuple[int, Any]:
        draft = f"{next(_ids):016x}"
        self.drafts[draft] = {"detail": call.body["detail"], "specs": {}, "errors": []}
        return 201, [{"id": draft}]

    def _delete_draft(self, call: ApiCall) -> tuple[int, Any]:
        draft = (call.param("id") or "").removeprefix("eq.")
        return 200, [{"id": draft}] if self.drafts.pop(draft, None) is not None else []

    def _stage(self, call: ApiCall) -> tuple[int, Any]:
        body = call.body
        self.drafts[body["draft_id"]]["specs"][body["catalog_name"]] = body
        return 201, [{"draft_id": body["draft_id"], "catalog_name": body["catalog_name"]}]

    def _publish(self, call: ApiCall) -> tuple[int, Any]:
        publication = f"{next(_ids):016x}"
        self.publications[publication] = {"draft": call.body["draft_id"], "polls": 0,
                                          "status": "queued"}
        return 201, [{"id": publication, "logs_token": str(uuid.uuid4())}]

    def _poll(self, call: ApiCall) -> tuple[int, Any]:
        publication = (call.param("id") or "").removeprefix("eq.")
        row = self.publications[publication]
        row["polls"] += 1
        if row["status"] == "queued" and row["polls"] > 1:
            row["status"] = self._apply(publication, self.drafts[row["draft"]])
        return 200, [{"id": publication, "job_status": {"type": row["status"]}}]

    def _apply(self, publication: str, draft: dict[str, Any]) -> str:
        for name, staged in draft["specs"].items():
            if staged["expect_pub_id"] != self.live[name]["last_pub_id"]:
                draft["errors"].append({"scope": f"flow://{name}", "detail": "expected "
                                        f"publication {staged['expect_pub_id']} but the live "
                                        f"spec is at {self.live[name]['last_pub_id']}"})
                return "expectPubIdMismatch"
        if self.fail_next:
            status, detail = self.fail_next
            self.fail_next = None
            draft["errors"].append({"scope": "flow://connector", "detail": detail})
            return status
        for name, staged in draft["specs"].items():
            self.live[name] |= {"spec": staged["spec"], "last_pub_id": publication}
            self._status_row(name)
        self.drafts = {k: v for k, v in self.drafts.items() if v is not draft}  # as Estuary does
        return "success"

    def _errors(self, call: ApiCall) -> tuple[int, Any]:
        draft = self.drafts.get((call.param("draft_id") or "").removeprefix("eq."), {})
        return 200, draft.get("errors", [])

    def _status(self, call: ApiCall) -> tuple[int, Any]:
        names = call.query.get("name", [])
        missing = [n for n in names if n not in self.specs]
        if missing:
            return 404, {"error": f"no live specs found for names: [{', '.join(missing)}]"}
        return 200, [self.specs[n] for n in names]


class Qdrant:
    """Qdrant's REST API over qdrant-client's local mode (the engine opsbot's runbook index uses
    in tests): collections, counts and collection info come from that engine; cluster,
    telemetry and snapshots are answered here (local mode has neither a cluster nor snapshots).
    No Qdrant server binary is installable here (not on PyPI, npm or Debian)."""

    def __init__(self) -> None:
        from qdrant_client import QdrantClient

        self.client = QdrantClient(location=":memory:")
        self.snapshots: dict[str, list[dict[str, Any]]] = {}

    def add_collection(self, name: str, payloads: list[dict[str, Any]]) -> None:
        from qdrant_client import models

        self.client.create_collection(name, models.VectorParams(size=4,
                                                                distance=models.Distance.COSINE))
        points = [models.PointStruct(id=i + 1, vector=[0.1 * (i + 1), 0.2, 0.3, 0.4], payload=p)
                  for i, p in enumerate(payloads)]
        self.client.upsert(name, points)

    def handlers(self) -> dict[str, Any]:
        return {
            "root": lambda c: (200, {"title": "qdrant - vector search engine",
                                     "version": "1.15.0"}),
            "healthz": lambda c: (200, "healthz check passed"),
            "readyz": lambda c: (200, "all shards are ready"),
            "cluster_status": lambda c: _ok({"status": "disabled"}),
            "get_collections": lambda c: _ok(self.client.get_collections().model_dump(mode="json")),
            "get_collection": lambda c: self._collection(c, self._info),
            "count_points": lambda c: self._collection(c, lambda n: {
                "count": self.client.count(n, exact=True).count}),
            "list_snapshots": lambda c: self._collection(c, lambda n: self.snapshots.get(n, [])),
            "create_snapshot": lambda c: self._collection(c, self._snapshot),
        }

    def _collection(self, call: ApiCall, then) -> tuple[int, Any]:
        name = call.path_params["collection_name"]
        if not self.client.collection_exists(name):
            return 404, {"status": {"error": f"Not found: Collection `{name}` doesn't exist!"},
                         "time": 0.0}
        return _ok(then(name))

    def _info(self, name: str) -> dict[str, Any]:
        return self.client.get_collection(name).model_dump(mode="json", exclude_none=True)

    def _snapshot(self, name: str) -> dict[str, Any]:
        snapshot = {"name": f"{name}-{next(_ids)}.snapshot", "creation_time": WHEN[:-1],
                    "size": 1024, "checksum": "0" * 64}
        self.snapshots.setdefault(name, []).append(snapshot)
        return snapshot


def _ok(result: Any) -> tuple[int, Any]:
    return 200, {"result": result, "status": "ok", "time": 0.001}


def _serve(document: str, fake: Any, token: str, auth: str = "bearer"
           ) -> Iterator[tuple[OpenApiEmulator, Any]]:
    with OpenApiEmulator(document, fake.handlers(), token, auth) as emulator:
        emulator.fake = fake
        yield emulator
        assert not emulator.faults, emulator.faults


@pytest.fixture
def neon_api():
    yield from _serve("neon.json", Neon(), NEON_TOKEN)


@pytest.fixture
def lambda_api():
    yield from _serve("lambda.json", Lambda(), LAMBDA_TOKEN, auth="basic")  # Bearer or Basic


@pytest.fixture
def estuary_api():
    yield from _serve("estuary.json", Estuary(), ESTUARY_TOKEN)


@pytest.fixture
def estuary_rest(estuary_api):
    """Estuary's PostgREST endpoint (drafts, publications) over the same fake as ``estuary_api``;
    it also wants the project's public key in ``apikey``, as Supabase does."""
    fake = estuary_api.fake
    handlers = {op: _with_key(handler) for op, handler in fake.publish_handlers().items()}
    with OpenApiEmulator("estuary_publish.json", handlers, ESTUARY_TOKEN) as emulator:
        emulator.fake = fake
        yield emulator
        assert not emulator.faults, emulator.faults


def _with_key(handler: Any) -> Any:
    def checked(call: ApiCall) -> tuple[int, Any]:
        if call.headers.get("apikey") != ESTUARY_REST_KEY:
            return 401, {"message": "No API key found in request"}
        return handler(call)

    return checked


@pytest.fixture
def qdrant_api():
    yield from _serve("qdrant.json", Qdrant(), QDRANT_KEY)
