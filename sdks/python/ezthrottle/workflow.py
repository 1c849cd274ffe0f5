"""The workflow builder: a DAG of ``Step`` calls submitted as one run (``POST
/api/v1/workflows``). Steps read earlier results with path templates in url paths and queries,
header values and bodies: ``{{input.<path>}}``, ``{{steps.<name>.response.status}}``,
``{{steps.<name>.response.headers.<name>}}``, ``{{steps.<name>.response.body.<path>}}``.

    wf = (
        WorkflowBuilder("checkout", input={"order": 42})
        .step("charge", Step().url(CHARGE).method("POST"),
              compensate=Step().url(REFUND + "?charge={{steps.charge.response.body.id}}"))
        .step("fulfil", Step().url(FULFIL), depends_on=["charge"], retry="1h")
        .step("email", Step().url(EMAIL), depends_on=["fulfil"], non_blocking=True)
    )
    run = client.submit_workflow(wf)
    done = client.wait_workflow(run["workflow_id"])
"""

from __future__ import annotations

from typing import Any

from .step import Step
from .types import Duration


class WorkflowBuilder:
    """Collects steps in order; ``to_payload()`` is the exact body sent."""

    def __init__(
        self,
        name: str = "",
        *,
        input: dict[str, Any] | None = None,
        webhooks: list[dict[str, Any]] | None = None,
        idempotent_key: str | None = None,
    ) -> None:
        """``webhooks`` (``[{"url": ...}]``) receive the run's signed ``workflow.completed``,
        ``workflow.failed``, ``workflow.cancelled`` and ``workflow.page`` events;
        ``idempotent_key`` makes the tenant's runs with that key one run."""
        if idempotent_key is not None and not idempotent_key:
            raise ValueError("idempotent_key must not be empty")
        self._name = name
        self._input: dict[str, Any] = dict(input or {})
        self._webhooks = [dict(w) for w in webhooks or []]
        self._key = idempotent_key
        self._steps: list[dict[str, Any]] = []

    def step(
        self,
        name: str,
        step: Step,
        *,
        depends_on: list[str] | None = None,
        critical: bool | None = None,
        non_blocking: bool = False,
        retry: Duration | None = None,
        compensate: Step | None = None,
        paginate: dict[str, Any] | None = None,
        when: str | None = None,
    ) -> WorkflowBuilder:
        """Adds a step: ``step``'s call plus its place in the graph. ``retry`` is the step's
        wall-clock budget; ``compensate`` runs (in reverse order of completion) when a
        critical step fails after this one succeeded. ``paginate`` (``{"style": "link"}``,
        ``{"style": "body_cursor", "next": "data[99].id", "has_more": "has_more"}``, …)
        follows pages, one job per page. ``when`` is a condition over the same paths
        (``"steps.charge.response.status == 200 && !exists(input.dry_run)"``): false skips the
        step and its dependents proceed. ``step``'s own ``webhooks`` report the step's job."""
        from . import _transport as _t

        if any(s["name"] == name for s in self._steps):
            raise ValueError(f"two steps named {name!r}")
        body: dict[str, Any] = dict(step.to_payload())
        # The run keys each step (`<workflow>:<step>`); a per-call key would be ignored.
        body.pop("idempotent_key", None)
        body["name"] = name
        if depends_on:
            body["depends_on"] = list(depends_on)
        if critical is not None:
            body["critical"] = critical
        if non_blocking:
            body["non_blocking"] = True
        if retry is not None:
            body["retry"] = _t.wire_duration(retry)
        if paginate is not None:
            body["paginate"] = dict(paginate)
        if when is not None:
            body["when"] = when
        if compensate is not None:
            comp: dict[str, Any] = dict(compensate.to_payload())
            comp.pop("idempotent_key", None)
            body["compensate"] = comp
        self._steps.append(body)
        return self

    def to_payload(self) -> dict[str, Any]:
        if not self._steps:
            raise ValueError("a workflow needs at least one step")
        out: dict[str, Any] = {"steps": [dict(s) for s in self._steps]}
        if self._name:
            out["name"] = self._name
        if self._input:
            out["input"] = self._input
        if self._webhooks:
            out["webhooks"] = [dict(w) for w in self._webhooks]
        if self._key is not None:
            out["idempotent_key"] = self._key
        return out
