"""A run's status-message checklist between processes (both storage modes): a line noted by
one process (an ingress: an alert's status) while another drives the run survives the
driver's save and is on the checklist it shows last."""

from graph.driver import Checklists
from graph.surface import RunState, StepState
from tests.graph.test_records import run


async def test_a_note_from_another_process_survives_the_drivers_save(records):
    ref = run("r-note1")
    await records.runs.add(ref)
    driver, ingress = Checklists(records), Checklists(records)  # two processes' views
    drive = await driver.of(ref)
    drive.step("r-note1-1", "Read Redis INFO", StepState.RUNNING)
    await driver.save(ref.run_id, RunState.RUNNING)

    _, shown = await ingress.note(ref.run_id, "alertmanager",
                                  "Alertmanager: resolved (2 alerts)", StepState.OK)
    assert [s.text for s in shown.steps] == ["Read Redis INFO", "Alertmanager: resolved (2 alerts)"]

    drive.step("r-note1-1", "Read Redis INFO", StepState.OK)  # the drive goes on, unaware
    await driver.save(ref.run_id, RunState.DONE, done=False)
    saved = (await records.runs.row(ref.run_id)).checklist
    assert [(s.text, s.state) for s in saved.steps] == [
        ("Read Redis INFO", StepState.OK), ("Alertmanager: resolved (2 alerts)", StepState.OK)]
    assert "Alertmanager: resolved (2 alerts)" in [s.text for s in drive.steps], \
        "the driver's last status shows it too"


async def test_a_note_in_the_driving_process_lands_on_its_live_checklist(records):
    ref = run("r-note2")
    await records.runs.add(ref)
    both = Checklists(records)  # the embedded mode: one process notes and drives
    drive = await both.of(ref)
    await both.note(ref.run_id, "pagerduty", "acknowledged", StepState.RUNNING)
    assert await both.note("r-none", "pagerduty", "acknowledged", StepState.RUNNING) is None
    assert [s.text for s in drive.steps] == ["acknowledged"]
