"""Running `cmrvsr-fast upscale` in-process from the tests, with the privacy check every run must pass."""

from __future__ import annotations

from dicom_fixtures import SECRET_STRINGS

from cmrvsr_fast import cli


def assert_private(text: str) -> None:
    for secret in SECRET_STRINGS:
        assert secret not in text, f"patient identifier {secret!r} reached the output"


def run(capsys, *args: object) -> tuple[int, str]:
    """Run the CLI in-process; returns the exit code and everything it printed (stdout and stderr), after checking
    that none of it names the patient."""
    code = cli.main(["upscale", *map(str, args), "--device", "cpu", "--quiet"])
    captured = capsys.readouterr()
    assert_private(captured.out + captured.err)
    return code, captured.out + captured.err
