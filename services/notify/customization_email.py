"""The email of a customization: its verdict first (kept, not kept, refused, failed, stopped,
cancelled), then what it cost and where it runs, the gate's figures, and the pre-flight's report."""
from __future__ import annotations

from shared.domain.runs import Run

_SUBJECTS = {
    "gate_passed": "gate passed, model kept",
    "gate_not_passed": "gate not passed, hosting deleted",
    "gate_failed": "gate failed, hosting deleted",
    "validation_failed": "refused: the data did not pass the pre-flight",
    "budget_refused": "refused: over budget",
    "validated": "pre-flight passed (validate only)",
    "job_failed": "customization job failed",
    "job_stopped": "customization job stopped",
    "hosting_failed": "hosting did not come up, deleted",
    "hosted": "model trained and hosted",
    "trained": "model trained",
    "cancelled": "cancelled",
}


def customization_email(run: Run, outcome: str) -> tuple[str, str]:
    """Subject and plain-text body of a customization's email."""
    spec = run.customization
    name = (spec.name or spec.custom_model_name) if spec else run.run_id
    s = run.summary or {}
    verdict = s.get("verdict") or ("failed" if outcome == "FAILED" else outcome.lower())
    subject = f"Quarry customization {name}: {_SUBJECTS.get(verdict, verdict)}"
    lines = [f"Customization {run.run_id}: {_SUBJECTS.get(verdict, verdict)}.", ""]
    if spec:
        lines += [f"Base model:    {spec.base_model} ({spec.type})", f"Custom model:  {spec.custom_model_name}"
                  + (f" ({s['custom_model_arn']})" if s.get("custom_model_arn") else "")]
    if s.get("failure_message"):
        lines.append(f"Bedrock says:  {s['failure_message']}")
    gate = s.get("gate") or run.gate
    if gate and gate.get("difference") is not None:
        lines += ["", f"Gate:          {gate['reason']}",
                  f"               {gate['metric']}: custom {gate['means'].get('custom'):.4f} vs base "
                  f"{gate['means'].get('base'):.4f} over {gate['n']} held-out records; margin {gate['difference']:+.4f}, "
                  f"95% CI [{gate['ci'][0]:+.4f}, {gate['ci'][1]:+.4f}], minimum effect {gate['min_effect']:g}"]
        if gate.get("report_uri"):
            lines.append(f"               report: {gate['report_uri']}")
    elif gate:
        lines += ["", f"Gate:          {gate.get('reason')}"]
    hosting = s.get("hosting")
    if hosting:
        cost = f", ${hosting['hourly_usd']:,.2f} an hour" if hosting.get("hourly_usd") is not None else ""
        state = "KEPT and billing" if hosting.get("kept") else f"deleted ({hosting.get('message')})"
        lines += ["", f"Hosting:       {hosting['kind']} {hosting.get('arn') or hosting['name']}: {state}{cost}"]
        if hosting.get("kept"):
            lines.append("               delete it when done with: quarry hosting delete " + (hosting.get("arn") or ""))
    if s.get("training_loss") is not None:
        lines.append(f"Loss:          training {s['training_loss']:.4f}"
                     + (f", validation {s['validation_loss']:.4f}" if s.get("validation_loss") is not None else "")
                     + f" ({len(run.loss_curve)} points kept on the run)")
    if run.error:
        lines += ["", f"Error: {run.error}"]
    preflight = run.preflight or {}
    if preflight.get("text"):
        lines += ["", preflight["text"], "", f"Full report: {preflight.get('report_text_uri')} (JSON: "
                  f"{preflight.get('report_uri')})"]
    lines += ["", f"See it with: quarry status {run.run_id}"]
    return subject, "\n".join(lines)
