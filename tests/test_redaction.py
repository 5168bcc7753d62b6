"""Every form of credential a database or HTTP URL can carry is masked; nothing else is changed."""

from __future__ import annotations

import pytest

from ablate.redaction import redact, scrub, strip_credentials

SECRET = "s3cr3t"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("postgresql+psycopg2://bob:s3cr3t@db:5432/optuna", "postgresql+psycopg2://bob:***@db:5432/optuna"),
        ("postgresql://:s3cr3t@db/optuna", "postgresql://:***@db/optuna"),  # a password and no user
        ("postgresql://bob:p@s3cr3t@db/optuna", "postgresql://bob:***@db/optuna"),  # @ inside the password
        ("postgresql://bob:a:s3cr3t@db/optuna", "postgresql://bob:***@db/optuna"),  # : inside the password
        ("postgresql://bob:pa/s3cr3t@db/optuna", "postgresql://bob:***@db/optuna"),  # an unescaped /
        ("postgresql://bob:p%40s3cr3t@db/optuna", "postgresql://bob:***@db/optuna"),  # %-escaped
        ("mysql+pymysql://bob:s3cr3t@db", "mysql+pymysql://bob:***@db"),  # no path after the host
        ("HTTPS://bob:s3cr3t@mlflow.example:5000", "HTTPS://bob:***@mlflow.example:5000"),
        ("http://bob:s3cr3t@[::1]:5000/", "http://bob:***@[::1]:5000/"),
        ("postgresql://db/optuna?password=s3cr3t", "postgresql://db/optuna?password=***"),
        ("postgresql://db/optuna?sslmode=require&PASSWORD=s3cr3t", "postgresql://db/optuna?sslmode=require&PASSWORD=***"),
        ("postgresql://db/optuna?pass%77ord=s3cr3t", "postgresql://db/optuna?pass%77ord=***"),  # %-escaped name
        ("https://mlflow.example/?token=s3cr3t&x=1", "https://mlflow.example/?token=***&x=1"),
        ("https://h/api?access_token=s3cr3t", "https://h/api?access_token=***"),
        ("https://h/api?api_key=s3cr3t#frag", "https://h/api?api_key=***#frag"),
        ("https://h/api?client_secret=s3cr3t;other=1", "https://h/api?client_secret=***;other=1"),
        ("postgresql://bob:s3cr3t@db/x?sslpassword=s3cr3t", "postgresql://bob:***@db/x?sslpassword=***"),
        ("https://s3cr3t@mlflow.example:5000", "https://***@mlflow.example:5000"),  # a token as the user
        ("http://ghp_s3cr3t@[::1]:5000/x", "http://***@[::1]:5000/x"),
    ],
)
def test_every_credential_form_is_masked(url: str, shown: str) -> None:
    assert redact(url) == shown
    assert SECRET not in redact(url)
    assert SECRET not in scrub(f"error: could not connect to '{url}', giving up")


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg2://postgres@127.0.0.1:5432/optuna",  # a user and no password: as it is, no fake :***
        "sqlite:////work/project/.ablate/optuna.db",
        "http://127.0.0.1:5000",
        "https://mlflow.example/#/experiments/1?x=1",
        "file:///tmp/mlruns",
        "databricks",
    ],
)
def test_urls_without_credentials_are_unchanged(url: str) -> None:
    assert redact(url) == url


def test_scrub_masks_every_url_in_a_text_and_leaves_the_rest() -> None:
    text = (
        "could not reach postgresql+psycopg2://bob:s3cr3t@db.example:5432/optuna (http://h:5000/x, me@example.com); "
        "retrying https://ann:s3cr3t@mlflow.example/api?token=s3cr3t"
    )
    assert scrub(text) == (
        "could not reach postgresql+psycopg2://bob:***@db.example:5432/optuna (http://h:5000/x, me@example.com); "
        "retrying https://ann:***@mlflow.example/api?token=***"
    )


def test_mlflow_prints_no_run_urls() -> None:
    """MLflow's own "View run ... at: URL" lines would carry the tracking URI's credentials."""
    import os

    from mlflow.environment_variables import MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT

    from ablate.tracking.tracker import Tracker

    Tracker("http://bob:s3cr3t@127.0.0.1:9")  # no server needed: nothing is sent until a call
    assert os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] == "true"
    assert MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT.get() is True


@pytest.mark.parametrize(
    ("url", "link"),
    [
        ("http://bob:s3cr3t@host:5000", "http://host:5000"),
        ("http://bob@host:5000/", "http://host:5000/"),  # a user alone goes too: a link needs none
        ("http://:s3cr3t@host:5000", "http://host:5000"),
        ("http://b%40b:p%3As3cr3t%2F@host:5000/mlflow", "http://host:5000/mlflow"),  # %-escaped
        ("https://bob:p@s3cr3t/x@host:5000", "https://host:5000"),  # @ and / inside the password
        ("http://bob:***@host:5000", "http://host:5000"),  # already redacted
        ("https://host:5000/?token=s3cr3t", "https://host:5000/"),
        ("https://host:5000/?x=1&access_token=s3cr3t;API_KEY=s3cr3t#/runs", "https://host:5000/?x=1#/runs"),
        ("https://host:5000/?pass%77ord=s3cr3t&x=1", "https://host:5000/?x=1"),
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://[::1]:5000/x?y=1", "http://[::1]:5000/x?y=1"),
    ],
)
def test_strip_credentials_leaves_a_link_without_any(url: str, link: str) -> None:
    assert strip_credentials(url) == link
    assert SECRET not in strip_credentials(url) and "bob" not in strip_credentials(url)
    assert strip_credentials(redact(url)) == link  # the report holds the redacted form
