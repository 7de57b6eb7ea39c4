"""The process-wide redactor: permanent values forever, per-action values while they matter."""

from tools.secrets import MASK, Redactor


def test_transient_values_are_redacted_while_live_and_for_the_last_few_released():
    redactor = Redactor(released_kept=2)
    redactor.add("static-secret", transient=False)
    values = [f"dynamic-password-{i}" for i in range(4)]
    for value in values:
        redactor.add(value, transient=True)
    assert all(redactor.redact(v) == MASK for v in values)  # live: never evicted
    for value in values:
        redactor.release(value)
    assert [redactor.redact(v) == MASK for v in values] == [False, False, True, True]
    assert redactor.redact("static-secret") == MASK and len(redactor) == 3


def test_releasing_a_permanent_or_unknown_value_changes_nothing():
    redactor = Redactor(released_kept=0)
    redactor.add("kept-forever")
    redactor.release("kept-forever")
    redactor.release("never-added")
    assert redactor.redact("kept-forever never-added") == f"{MASK} never-added"
