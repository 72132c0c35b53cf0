"""The admin path: the token check itself, every admin event called through the Gradio API without the UI,
a real tiny training run start to promote, the Hub paths with the Hub unreachable, and the tab in Chromium.

The real ``train_scratch`` (default preset, 2 epochs, 12 images) runs in the full-life and browser tests;
the refusal tests use a spy trainer that records any call (there must be none).
"""

import hmac
import json
import time
import uuid
from pathlib import Path

import gradio as gr
import httpx
import pytest
import torch
from gradio_client import Client

from clipdemo import auth as auth_module
from clipdemo import hub_access, hub_sync
from clipdemo.auth import AdminAuth, AuthError
from clipdemo.checkpoints import promote, save_checkpoint, served_version
from clipdemo.encoders import load_encoder
from clipdemo.families import FAMILIES
from clipdemo.jobs import JobRunner
from clipdemo.serving import Served
from clipdemo.settings import HUB_REPO_ENV, TOKEN_ENV, Settings
from clipdemo.testing import (
    colour_folder,
    fake_trainer,
    launched,
    recorded_calls,
    screenshot,
    tree_digest,
    wait_for,
)
from clipdemo.ui import admin_tab
from clipdemo.ui.app import launch_kwargs

TOKEN = "correct horse battery staple 42"
NO_DELAY = dict(schedule=lambda failures: 0.0)


# --- the check itself ------------------------------------------------------------------------------------------


def test_disabled_without_a_token_and_says_how_to_enable():
    auth = AdminAuth(None)
    assert not auth.enabled
    for supplied in (None, "", "anything"):
        with pytest.raises(AuthError, match="CLIPDEMO_ADMIN_TOKEN"):
            auth.check(supplied)


def test_right_token_passes_wrong_ones_are_refused_without_echo():
    auth = AdminAuth(TOKEN, **NO_DELAY)
    auth.check(TOKEN)
    for supplied in (None, "", "guess-123", TOKEN + " ", TOKEN[:-1], "x" * 100_000, "é\x00"):
        with pytest.raises(AuthError) as e:
            auth.check(supplied)
        assert TOKEN not in str(e.value) and (not supplied or supplied not in str(e.value))
    assert TOKEN not in repr(auth)


def test_comparison_is_constant_time(monkeypatch):
    seen, real = [], hmac.compare_digest

    def spy(a, b):
        seen.append((type(a), type(b)))
        return real(a, b)

    monkeypatch.setattr(auth_module.hmac, "compare_digest", spy)
    auth = AdminAuth(TOKEN, **NO_DELAY)
    auth.check(TOKEN)
    with pytest.raises(AuthError):
        auth.check("wrong")
    assert seen == [(bytes, bytes), (bytes, bytes)]


def test_repeated_failures_are_slowed_down_per_client_and_globally():
    slept = []
    auth = AdminAuth(TOKEN, schedule=lambda n: 0.0 if n < 2 else 0.1 * n, sleep=slept.append)
    for _ in range(4):
        with pytest.raises(AuthError):
            auth.check("guess", client="attacker")
    assert slept == [0.2, 0.30000000000000004]  # the 3rd and 4th attempts waited, growing
    auth.check(TOKEN, client="admin")  # another client: its own count is 0, the global share 4 // 5 = 0
    assert slept == [0.2, 0.30000000000000004]
    for i in range(20):  # an attacker rotating addresses still raises the global count
        with pytest.raises(AuthError):
            auth.check("guess", client=f"10.0.0.{i}")
    assert auth.failures("fresh") == 24 // 5 and slept[-1] > 0
    auth.check(TOKEN, client="attacker")  # success forgives that client's own count
    assert auth.failures("attacker") == 24 // 5


def test_failures_are_forgotten_after_a_quiet_while():
    now = [0.0]
    auth = AdminAuth(TOKEN, clock=lambda: now[0], sleep=lambda s: None)
    for _ in range(5):
        with pytest.raises(AuthError):
            auth.check("guess", client="c")
    assert auth.failures("c") == 5
    now[0] += auth_module.FORGET_AFTER_S + 1
    assert auth.failures("c") == 0


def test_an_allow_listed_hugging_face_account_passes_without_the_token():
    auth = AdminAuth(None, users=("Alice", " bob "), **NO_DELAY)
    assert auth.enabled and auth.sign_in
    auth.check(None, user="alice")  # usernames compare without case, as on the Hub
    auth.check("", user="BOB")
    for user in (None, "", "mallory", "alice2"):
        with pytest.raises(AuthError, match="sign in with an allowed Hugging Face account"):
            auth.check("guess", user=user)
    both = AdminAuth(TOKEN, users=("alice",), **NO_DELAY)
    both.check(TOKEN, user="mallory")  # the token still works for anyone
    both.check(None, user="alice")


def test_the_allow_list_is_ignored_off_spaces(caplog):
    settings = Settings(admin_token=None, admin_users=("alice",))
    on_space = {"SYSTEM": "spaces", "SPACE_ID": "me/clipdemo", "OAUTH_CLIENT_SECRET": "s3cret"}
    assert AdminAuth.from_settings(settings, env=on_space).sign_in
    for env in ({}, {**on_space, "SYSTEM": "local"}, {**on_space, "OAUTH_CLIENT_SECRET": ""}):
        # off a Space Gradio's sign-in is a mock and its session cookie key is public: anyone could be "alice"
        auth = AdminAuth.from_settings(settings, env=env)
        assert not auth.enabled and not auth.sign_in
    assert "CLIPDEMO_ADMIN_USERS is ignored" in caplog.text


def test_default_schedule_is_capped():
    assert [auth_module.default_schedule(n) for n in (0, 2, 3, 4, 6, 50)] == [0, 0, 1, 2, 8, 10]


# --- every admin event through the API ------------------------------------------------------------------------


def build_admin_app(settings, runner, auth):
    """The admin tab plus a trivial endpoint standing for the other tabs."""
    served = Served(settings)
    with gr.Blocks(analytics_enabled=False) as app:
        with gr.Tab("Admin"):
            admin_tab.build(served, runner, auth)
        ping_in, ping_out = gr.Textbox(visible=False), gr.Textbox(visible=False)
        gr.Button(visible=False).click(lambda x: f"pong {x}", ping_in, ping_out, api_name="ping")
    app.queue(default_concurrency_limit=2)
    return app, served


@pytest.fixture
def setup(tmp_path):
    """Data root with a tiny folder; scratch versions v0 and v1, v1 served with v0 to roll back to."""
    data = colour_folder(tmp_path / "data" / "tiny", per_class={"train": 4, "test": 2}).parent
    ckpt = tmp_path / "checkpoints"
    for v in ("v0", "v1"):
        save_checkpoint(
            ckpt / "scratch" / v, {"w": torch.ones(2)}, {"kind": "fake"}, {"dataset": v, "metrics": {"acc1": 0.5}}
        )
        promote(ckpt, "scratch", v)
    settings = Settings(model="test/backbone", checkpoint_dir=ckpt, data_root=data, admin_token=TOKEN)
    return settings, tmp_path


START_FORM = dict(
    kind="scratch",
    dataset="tiny",
    config="",
    preset="default",
    epochs=1,
    max_seconds=None,
    seed=0,
    backbone="default",
    head="linear",
    split="tutorial",
)


def start_args(token, **change) -> tuple:
    """admin_start's inputs in order: the token, then the Admin form (``change`` replaces some of its fields)."""
    return (token, *{**START_FORM, **change}.values())


def admin_calls(token):
    return {
        "/admin_status": (token,),
        "/admin_start": start_args(token),
        "/admin_cancel": (token,),
        "/admin_versions": (token, "scratch"),
        "/admin_card": (token, "scratch", "v0"),
        "/admin_promote": (token, "scratch", "v0"),
        "/admin_promote_anyway": (token, "scratch", "v0"),
        "/admin_rollback": (token, "scratch"),
        "/admin_push": (token, "scratch", "v1"),
        "/admin_pull": (token, "scratch"),
    }


def queue_call(url: str, fn_index: int, data: list, timeout: float = 60) -> dict:
    """Call one event through Gradio's queue the way the page does (no client library); the final message."""
    session = uuid.uuid4().hex
    join = httpx.post(
        f"{url}gradio_api/queue/join",
        json={"data": data, "fn_index": fn_index, "session_hash": session, "event_data": None, "trigger_id": None},
    )
    join.raise_for_status()
    with httpx.stream(
        "GET", f"{url}gradio_api/queue/data", params={"session_hash": session}, timeout=timeout
    ) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                if message.get("msg") == "process_completed":
                    return message
    raise AssertionError(f"no answer from event {fn_index}")


@pytest.mark.parametrize("configured", [TOKEN, None], ids=["wrong-token", "admin-disabled"])
def test_every_admin_event_is_refused_through_the_api(setup, monkeypatch, configured):
    settings, _ = setup
    settings.admin_token = configured
    hub_calls = []
    monkeypatch.setenv(HUB_REPO_ENV, "someone/ckpts")
    monkeypatch.setattr(hub_sync, "push_checkpoint", lambda *a, **k: hub_calls.append(a))
    monkeypatch.setattr(hub_sync, "pull_checkpoint", lambda *a, **k: hub_calls.append(a))
    trainer_calls = settings.checkpoint_dir.parent / "trainer-calls"
    runner = JobRunner.from_settings(
        settings,
        trainers={"scratch": fake_trainer(calls=trainer_calls), "cars-head": fake_trainer(calls=trainer_calls)},
    )
    auth = AdminAuth(configured, **NO_DELAY)
    before = tree_digest(settings.checkpoint_dir)
    app, _ = build_admin_app(settings, runner, auth)
    expected = "disabled" if configured is None else "refused"
    with launched(app, **launch_kwargs(settings)) as url:
        config = httpx.get(f"{url}config").text
        assert str(settings.checkpoint_dir.parent) not in config  # no server path in the page, tab hidden or not
        client = Client(url, verbose=False)
        assert set(admin_calls(None)) == {f"/{n}" for n in admin_tab.API_NAMES}  # none left out
        for supplied in (None, "wrong-token", TOKEN.upper()):
            for api_name, args in admin_calls(supplied).items():
                with pytest.raises(Exception, match=expected) as e:
                    client.predict(*args, api_name=api_name)
                assert TOKEN not in str(e.value) and (not supplied or supplied not in str(e.value))
        assert client.predict("x", api_name="/ping") == "pong x"  # the rest of the app still answers
        # The page's own events, hidden ones included (timer tick, chained refresh), straight through the queue
        # as a browser would send them: every one takes the token first and refuses.
        tab_events = [fn for fn in app.fns.values() if fn.api_name != "ping"]
        assert len(tab_events) >= len(admin_tab.API_NAMES) + 2
        for fn in tab_events:
            assert fn.inputs and fn.inputs[0].elem_id == "admin-token", fn.api_name
            values = [getattr(c, "value", None) if not isinstance(c, gr.State) else None for c in fn.inputs[1:]]
            done = queue_call(url, fn._id, ["wrong-token", *values])
            if done["success"]:  # the timer's tick answers quietly: locked, nothing shown, timer stopped
                lock, *rest = done["output"]["data"]
                assert lock.startswith("**Locked.**") and expected in lock and rest[-2].get("active") is False
                assert all(r == {"__type__": "update"} for r in rest[:5])
            else:
                assert expected in done["output"]["error"], (fn.api_name, done)
    assert runner.snapshot() == {"state": "idle"} and recorded_calls(trainer_calls) == [] and hub_calls == []
    assert tree_digest(settings.checkpoint_dir) == before and served_version(settings.checkpoint_dir, "scratch") == "v1"
    if configured:
        assert auth.failures("127.0.0.1") >= 4 * 9  # the handlers passed the caller through to the throttle


def test_every_admin_handler_takes_the_sign_in_from_gradio_and_checks_it(setup):
    """Gradio injects ``gr.OAuthProfile`` from its signed session into parameters annotated with it (never from
    the request's inputs); every admin handler has one and passes it to the check. In-process: a sign-in can't
    be made off a Space."""
    import typing

    settings, _ = setup
    settings.admin_token = None
    auth = AdminAuth(None, users=("alice",), **NO_DELAY)
    app, _ = build_admin_app(settings, JobRunner.from_settings(settings), auth)
    handlers = {fn.api_name: fn.fn for fn in app.fns.values() if fn.api_name != "ping"}
    for name, handler in handlers.items():
        assert typing.get_type_hints(handler)["profile"] == gr.OAuthProfile | None, name
    profile = {"name": "A", "profile": "https://huggingface.co/x", "picture": ""}
    alice = gr.OAuthProfile({**profile, "preferred_username": "alice"})
    mallory = gr.OAuthProfile({**profile, "preferred_username": "mallory"})
    assert handlers["admin_cancel"](None, None, profile=alice) == "No training job is running."
    for who in (mallory, None):
        with pytest.raises(gr.Error, match="sign in"):
            handlers["admin_cancel"](None, None, profile=who)


def in_process_handlers(settings, runner) -> dict:
    """The tab's handlers by api_name, called in process (as Gradio calls them, minus the queue)."""
    app, _ = build_admin_app(settings, runner, AdminAuth(TOKEN, **NO_DELAY))
    return {fn.api_name: fn.fn for fn in app.fns.values() if fn.api_name != "ping"}


def test_an_admin_job_with_a_bad_option_is_refused_in_the_checkers_sentence(setup):
    """The Admin form's options go through ``pipeline.train_options`` (the CLI's checker) once: the same sentence
    for the same mistake, nothing started; the form's 0 epochs / 0 seconds mean the default / no budget."""
    settings, _ = setup
    calls = settings.checkpoint_dir.parent / "trainer-calls"
    runner = JobRunner.from_settings(settings, trainers={f: fake_trainer(calls=calls) for f in FAMILIES})
    start = in_process_handlers(settings, runner)["admin_start"]
    form = dict(epochs=0, max_seconds=0)  # the form's own defaults
    for change, sentence in (
        (dict(epochs=1.5), "Epochs must be a whole number from 1 to 100000."),
        (dict(seed=-1), "The seed must be a whole number from 0 to 2147483647."),
        (dict(preset="huge"), "Unknown preset 'huge'; choose one of seed, default."),
        (dict(kind="rm -rf"), "Unknown job kind 'rm -rf'; choose one of scratch, cars-head."),
        (dict(kind="cars-head", backbone="no-such-key"), "Choose the backbone among this app's models."),
        (dict(kind="cars-head", split="random"), "The split must be one of tutorial, official."),
    ):
        with pytest.raises(gr.Error) as refused:
            start(*start_args(TOKEN, **{**form, **change}), request=None)
        assert refused.value.message == sentence
    assert runner.snapshot() == {"state": "idle"} and recorded_calls(calls) == []
    assert start(*start_args(TOKEN, **form), request=None)[0].startswith("Started job 1: scratch")
    options = runner.wait(60)["options"]
    assert (options["epochs"], options["max_seconds"], options["seed"]) == (None, None, 0)
    assert len(recorded_calls(calls)) == 1


def test_every_versions_handler_refuses_a_family_it_does_not_know(setup, monkeypatch):
    """One rule for the family the versions panel names: one of FAMILIES, before any folder is read."""
    settings, _ = setup
    monkeypatch.setenv(HUB_REPO_ENV, "someone/ckpts")
    monkeypatch.setattr(hub_sync, "push_checkpoint", lambda *a, **k: pytest.fail("pushed"))
    monkeypatch.setattr(hub_sync, "pull_checkpoint", lambda *a, **k: pytest.fail("pulled"))
    handlers = in_process_handlers(settings, JobRunner.from_settings(settings))
    for family in ("..", "../checkpoints/scratch", "", None):
        for name, args in (
            ("admin_versions", ()),
            ("admin_rollback", ()),
            ("admin_pull", ()),
            ("admin_push", ("",)),
        ):
            with pytest.raises(gr.Error) as refused:
                handlers[name](TOKEN, family, *args, request=None)
            assert refused.value.message == "Choose a family.", name
        for name in ("admin_card", "admin_promote", "admin_push"):
            with pytest.raises(gr.Error) as refused:
                handlers[name](TOKEN, family, "v0", request=None)
            assert refused.value.message == "Choose a family and one of its versions.", name
    assert served_version(settings.checkpoint_dir, "scratch") == "v1"


def test_refusals_through_the_api_are_slowed_down(setup):
    settings, _ = setup
    slept = []
    auth = AdminAuth(TOKEN, schedule=lambda n: 0.0 if n < 3 else 1.0, sleep=lambda s: (slept.append(s), time.sleep(s)))
    app, _ = build_admin_app(settings, JobRunner.from_settings(settings), auth)
    with launched(app, **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        times = []
        for _ in range(4):
            t0 = time.monotonic()
            with pytest.raises(Exception, match="refused"):
                client.predict("guess", api_name="/admin_cancel")
            times.append(time.monotonic() - t0)
        assert slept == [1.0] and times[3] >= 1.0  # only the 4th attempt waited


def test_a_job_start_to_promote_and_rollback_through_the_api(setup):
    """Real train_scratch on 12 tiny images: start, progress, busy, finish, promote (served without restart),
    a second run cancelled, promote it, roll back."""
    settings, _ = setup
    root = settings.checkpoint_dir
    runner = JobRunner.from_settings(settings)
    app, served = build_admin_app(settings, runner, AdminAuth(TOKEN, **NO_DELAY))
    two_epochs = start_args(TOKEN, epochs=2)
    with launched(app, **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        message, _ = client.predict(*two_epochs, api_name="/admin_start")
        assert message.startswith("Started job 1: scratch on `tiny`")
        with pytest.raises(Exception, match="already running"):
            client.predict(*two_epochs, api_name="/admin_start")
        assert wait_for(
            lambda: runner.snapshot().get("step") is not None or runner.snapshot()["state"] != "running", 120
        )
        t0 = time.monotonic()
        assert client.predict("y", api_name="/ping") == "pong y"  # other tabs answer while it trains
        assert time.monotonic() - t0 < 10
        snap = runner.wait(300)
        assert snap["state"] == "finished", snap
        assert any(e.get("phase") == "train" for e in snap["history"]) and any(
            e.get("phase") == "eval" for e in snap["history"]
        )
        lock, progress, curve, log_tail, results, confusion, _ = client.predict(TOKEN, api_name="/admin_status")
        assert "finished" in progress and "Held-out results" in results and "top-1 accuracy" in results
        assert curve and confusion and "finished" in log_tail and TOKEN not in str((lock, progress, log_tail, results))

        new = snap["version"]
        table, _ = client.predict(TOKEN, "scratch", api_name="/admin_versions")
        assert new in [row[0] for row in table["data"]]
        card = client.predict(TOKEN, "scratch", new, api_name="/admin_card")
        assert card["complete"] is True and card["classes"] == ["blue", "green", "red"]
        text, *_ = client.predict(TOKEN, "scratch", new, api_name="/admin_promote")
        if "Check before serving" in text:  # it scored below v1's 50% on its 6 held-out images: asked, not served
            assert "is below the served version's (50.0%)" in text and served_version(root, "scratch") == "v1"
            text, *_ = client.predict(TOKEN, "scratch", new, api_name="/admin_promote_anyway")
        assert "Promoted" in text and served.checkpoint("scratch").name == new  # picked up without a restart
        encoder = load_encoder(str(served.checkpoint("scratch")))
        assert encoder.encode_texts(["a photo of a red."]).shape[0] == 1

        client.predict(*start_args(TOKEN, epochs=500, seed=1), api_name="/admin_start")
        assert wait_for(lambda: runner.snapshot().get("step") is not None, 120)
        t0 = time.monotonic()
        assert "Cancelling" in client.predict(TOKEN, api_name="/admin_cancel")
        snap = runner.wait(60)
        assert snap["state"] == "cancelled" and time.monotonic() - t0 < 30
        assert served_version(root, "scratch") == new  # a cancelled run replaces nothing
        if snap["kept"]:
            text, *_ = client.predict(TOKEN, "scratch", snap["version"], api_name="/admin_promote")
            assert "its run is complete (cancelled)" in text and served_version(root, "scratch") == new
            client.predict(TOKEN, "scratch", snap["version"], api_name="/admin_promote_anyway")
            assert served_version(root, "scratch") == snap["version"]
        text, _, _ = client.predict(TOKEN, "scratch", api_name="/admin_rollback")
        expected = new if snap["kept"] else "v1"
        assert "Rolled scratch back" in text and served_version(root, "scratch") == expected


def test_bad_data_fails_with_a_short_message_while_other_handlers_answer(setup, monkeypatch):
    settings, tmp = setup
    monkeypatch.setenv(HUB_REPO_ENV, "someone/ckpts")
    for name in ("cat", "dog"):
        (settings.data_root / "broken" / "train" / name).mkdir(parents=True)
        for i in range(3):
            (settings.data_root / "broken" / "train" / name / f"{i}.png").write_bytes(b"not a png at all")
    runner = JobRunner.from_settings(settings)
    app, _ = build_admin_app(settings, runner, AdminAuth(TOKEN, **NO_DELAY))
    with launched(app, **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        client.predict(*start_args(TOKEN, dataset="broken"), api_name="/admin_start")
        assert client.predict("z", api_name="/ping") == "pong z"
        assert wait_for(lambda: runner.snapshot()["state"] != "running", 120)
        _, progress, *_ = client.predict(TOKEN, api_name="/admin_status")
        assert "failed" in progress and "**Error:**" in progress and "Traceback" not in progress
        error = runner.snapshot()["error"]
        assert error and len(error) <= 300 and "\n" not in error
        assert served_version(settings.checkpoint_dir, "scratch") == "v1"
        for api_name in ("/admin_card", "/admin_promote", "/admin_push"):  # version names can't leave the family
            with pytest.raises(Exception, match="not a version name|Choose a family"):
                client.predict(TOKEN, "scratch", "../../v0", api_name=api_name)
        with pytest.raises(Exception, match="refused: paths must stay inside"):
            client.predict(*start_args(TOKEN, dataset="../outside"), api_name="/admin_start")


# --- the Hub, unreachable -------------------------------------------------------------------------------------


@pytest.fixture
def hub_down(monkeypatch):
    """Point the Hub client at a closed local port: the reachability probe fails at once, as offline."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


def test_push_and_pull_with_the_hub_unreachable_say_so_fast(setup, hub_down, monkeypatch):
    settings, _ = setup
    root = settings.checkpoint_dir
    before = tree_digest(root)
    t0 = time.monotonic()
    with pytest.raises(hub_sync.HubSyncError, match="Hub is unreachable.*nothing was pushed"):
        hub_sync.push_checkpoint(root / "scratch" / "v1", "someone/ckpts", token="hf_secret")
    with pytest.raises(hub_sync.HubSyncError, match="Hub is unreachable.*nothing was pulled"):
        hub_sync.pull_checkpoint("someone/ckpts", root, "scratch")
    monkeypatch.setenv(HUB_REPO_ENV, "someone/ckpts")
    empty = Settings(model="m", checkpoint_dir=root.parent / "fresh")
    assert "unreachable" in hub_sync.pull_at_startup(empty)
    assert time.monotonic() - t0 < 10
    assert tree_digest(root) == before
    monkeypatch.delenv(HUB_REPO_ENV)
    assert "not set" in hub_sync.pull_at_startup(empty)


def test_admin_push_through_the_api_with_the_hub_unreachable(setup, hub_down, monkeypatch):
    settings, _ = setup
    monkeypatch.setenv(HUB_REPO_ENV, "someone/ckpts")
    app, _ = build_admin_app(settings, JobRunner.from_settings(settings), AdminAuth(TOKEN, **NO_DELAY))
    with launched(app, **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        t0 = time.monotonic()
        with pytest.raises(Exception, match="unreachable"):
            client.predict(TOKEN, "scratch", "v1", api_name="/admin_push")
        with pytest.raises(Exception, match="unreachable"):
            client.predict(TOKEN, "scratch", api_name="/admin_pull")
        assert time.monotonic() - t0 < 10


def test_push_and_pull_logic_with_a_fake_hub(setup, monkeypatch):
    """The code around the Hub calls: what is uploaded where; a pull lands in a new version and is promoted,
    a pull of nothing usable leaves what is served alone."""
    import huggingface_hub

    settings, _ = setup
    root = settings.checkpoint_dir
    uploads = []

    class FakeApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, **kwargs):
            assert kwargs["private"] is True

        def upload_folder(self, **kwargs):
            uploads.append((self.token, kwargs["folder_path"], kwargs["path_in_repo"], kwargs["repo_id"]))

    def fake_download(repo_id, *, local_dir, allow_patterns, token=None, **kwargs):
        if repo_id == "someone/ckpts" and allow_patterns == ["scratch/*"]:
            save_checkpoint(Path(local_dir) / "scratch", {"w": torch.zeros(2)}, {"kind": "fake"}, {"dataset": "hub"})
        return str(local_dir)

    monkeypatch.setattr(hub_access, "hub_reachable", lambda timeout=2.0: True)
    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    monkeypatch.setenv(TOKEN_ENV, "hf_from_env")
    assert "Pushed scratch version v1" in hub_sync.push_checkpoint(root / "scratch" / "v1", "someone/ckpts")
    assert uploads == [("hf_from_env", str(root / "scratch" / "v1"), "scratch", "someone/ckpts")]

    with pytest.raises(hub_sync.HubSyncError, match="no loadable scratch checkpoint"):
        hub_sync.pull_checkpoint("someone/empty", root, "scratch")
    assert served_version(root, "scratch") == "v1" and not [p for p in (root / "scratch").iterdir() if "hub" in p.name]
    folder = hub_sync.pull_checkpoint("someone/ckpts", root, "scratch")
    assert folder.name.endswith("-hub") and served_version(root, "scratch") == folder.name
    assert not [p for p in (root / "scratch").iterdir() if p.name.endswith(".partial")]

    monkeypatch.setenv(HUB_REPO_ENV, "someone/ckpts")
    fresh = Settings(model="m", checkpoint_dir=root.parent / "fresh")
    note = hub_sync.pull_at_startup(fresh)  # scratch pulled; cars-head absent from the repo: said, not raised
    assert "pulled scratch" in note and "cars-head: The Hub repo someone/ckpts has no loadable" in note
    assert served_version(fresh.checkpoint_dir, "scratch")


# --- the tab in a browser -------------------------------------------------------------------------------------


def test_browser_unlock_train_watch_the_curve_promote(setup, browser):
    settings, _ = setup
    runner = JobRunner.from_settings(settings)
    app, served = build_admin_app(settings, runner, AdminAuth(TOKEN, **NO_DELAY))
    with launched(app, **launch_kwargs(settings)) as url:
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(url)
        page.wait_for_selector("#admin-token input", timeout=60_000)
        page.fill("#admin-token input", TOKEN)
        page.click("#admin-unlock")
        page.wait_for_function(
            "() => document.querySelector('#admin-lock')?.innerText.includes('Unlocked')", timeout=30_000
        )
        page.fill("#admin-dataset input", "tiny")
        page.keyboard.press("Enter")
        page.fill("#admin-epochs input", "2")
        page.wait_for_timeout(300)
        page.click("#admin-start")
        page.wait_for_function(
            "() => document.querySelector('#admin-job-status')?.innerText.includes('Started job')", timeout=30_000
        )
        page.wait_for_selector("#admin-curve img", timeout=180_000)  # the empty plot shows an svg icon, a figure an img
        page.wait_for_function(
            "() => document.querySelector('#admin-results')?.innerText.includes('Held-out results')", timeout=300_000
        )
        page.wait_for_selector("#admin-confusion img", timeout=30_000)
        new = runner.snapshot()["version"]
        page.click("#admin-list")
        page.wait_for_function(
            f"() => document.querySelector('#admin-versions')?.innerText.includes('{new}')", timeout=30_000
        )
        page.fill("#admin-version input", new)
        page.keyboard.press("Enter")
        page.wait_for_timeout(300)
        page.click("#admin-promote")
        page.wait_for_function(
            "() => /Promoted|Check before serving/.test(document.querySelector('#admin-version-status')?.innerText)",
            timeout=30_000,
        )
        if "Check before serving" in page.inner_text("#admin-version-status"):  # below v1's 50%: asked first
            page.click("#admin-promote-anyway")
            page.wait_for_function(
                "() => document.querySelector('#admin-version-status')?.innerText.includes('Promoted')", timeout=30_000
            )
        assert served.checkpoint("scratch").name == new
        assert TOKEN not in page.content()  # the password field's value is a property, not in the HTML
        assert screenshot(page, "admin_tab").stat().st_size > 20_000
        page.close()


def test_admin_promote_refuses_the_version_its_own_job_is_writing(tmp_path):
    import gradio as gr

    from clipdemo.checkpoints import load_checkpoint
    from clipdemo.jobs import JobRunner
    from clipdemo.settings import Settings
    from clipdemo.testing import colour_folder, job_gate

    gate = job_gate()  # saved, still training: a later save may replace what is there
    data = colour_folder(tmp_path / "data" / "tiny", per_class={"train": 4, "test": 2}).parent
    settings = Settings(model="test/backbone", checkpoint_dir=tmp_path / "ck", data_root=data, admin_token=TOKEN)
    runner = JobRunner.from_settings(settings, trainers={"scratch": fake_trainer(steps=1, gate=gate, save_first=True)})
    handlers = in_process_handlers(settings, runner)
    handlers["admin_start"](
        TOKEN, "scratch", "tiny", "", "default", 1, None, 0, "default", "linear", "tutorial", request=None
    )
    version = runner.snapshot()["version"]
    assert wait_for(lambda: (settings.checkpoint_dir / "scratch" / version).is_dir(), timeout=60)
    load_checkpoint(settings.checkpoint_dir / "scratch" / version)
    with pytest.raises(gr.Error) as refused:
        handlers["admin_promote"](TOKEN, "scratch", version, request=None)
    assert f"'{version}' is still being written by a live run (pid" in refused.value.message
    gate.set()
    assert runner.wait(60)["state"] == "finished"
    text = handlers["admin_promote"](TOKEN, "scratch", version, request=None)[0]
    assert text.startswith(f"Promoted scratch version `{version}`")


# --- hostile zips through the HTTP API: one sentence about the upload each, and the server keeps serving ------


def test_a_finished_job_reads_100_percent_whatever_step_it_stopped_at():
    """A head's search can finish before its planned step count (8 of 14): the progress line then says done, with
    a full bar and no ETA, instead of staying at "step 8/14"."""
    from clipdemo.ui.admin_tab import progress_text

    snap = {
        "id": 3,
        "family": "cars-head",
        "dataset": "tiny",
        "version": "v",
        "phase": "eval",
        "step": 8,
        "total_steps": 14,
        "elapsed_s": 2.0,
        "eta_s": 1.5,
    }
    running = progress_text({**snap, "state": "running"})
    assert "step 8/14" in running and "ETA" in running
    finished = progress_text({**snap, "state": "finished"})
    assert "▓" * 20 in finished and "done in 8 steps" in finished
    assert "step 8/14" not in finished and "ETA" not in finished


# --- Admin for people: promote asks, the dataset picker, a head's curve and the newest log line ---------------------


def test_promote_shows_the_comparison_and_asks_before_a_worse_or_cancelled_version(setup):
    """Served: v1 (top-1 50%). A better complete version is served at the first click, beside the comparison; a
    worse one, or a cancelled one even when it scores higher, is only compared, with a "Serve it anyway" button that
    serves exactly the version compared."""
    settings, _ = setup
    root = settings.checkpoint_dir
    for version, acc1, stopped in (("v2-worse", 0.45, "finished"), ("v3-cancelled", 0.9, "cancelled")):
        card = {"dataset": "tiny", "metrics": {"acc1": acc1}, "run": {"stopped": stopped}}
        save_checkpoint(root / "scratch" / version, {"w": torch.ones(2)}, {"kind": "fake"}, card)
    save_checkpoint(root / "scratch" / "v4-better", {"w": torch.ones(2)}, {"kind": "fake"}, {"metrics": {"acc1": 0.8}})
    handlers = in_process_handlers(settings, JobRunner.from_settings(settings))
    promote_, anyway = handlers["admin_promote"], handlers["admin_promote_anyway"]

    text, table, version, button, family, pending = promote_(TOKEN, "scratch", "v2-worse", request=None)
    assert "Check before serving" in text and "45.0% | 50.0%" in text and "Nothing was changed" in text
    assert (family, pending) == ("scratch", "v2-worse") and button.visible and button.value == "Serve v2-worse anyway"
    assert served_version(root, "scratch") == "v1"
    text = promote_(TOKEN, "scratch", "v3-cancelled", request=None)[0]
    assert "its run is complete (cancelled)" in text and "90.0% | 50.0%" in text
    assert served_version(root, "scratch") == "v1"

    text, table, _, button, *pending = anyway(TOKEN, "scratch", "v2-worse", request=None)
    assert text.startswith("Promoted scratch version `v2-worse`") and served_version(root, "scratch") == "v2-worse"
    assert not button.visible and pending[1] == ""
    assert [r for r in table if r[0] == "v2-worse"][0][1] == "✓"

    text = promote_(TOKEN, "scratch", "v4-better", request=None)[0]  # 80% over 45%, complete: one click
    assert text.startswith("Promoted scratch version `v4-better`") and "80.0% | 45.0%" in text
    assert served_version(root, "scratch") == "v4-better"
    with pytest.raises(gr.Error, match="no scratch version 'v9'"):
        promote_(TOKEN, "scratch", "v9", request=None)


def test_the_dataset_picker_offers_the_folders_the_server_allows(setup, tmp_path):
    """After unlock the picker lists 'shapes' and the data folder's entries by name (what the runner reads); hidden
    names and links leading out are left out; the page names the data folder by its name, never its path."""
    from clipdemo.data.sources import SourcePolicy, allowed_sources

    settings, _ = setup
    (settings.data_root / ".hidden").mkdir()
    (settings.data_root / "escape").symlink_to(tmp_path, target_is_directory=True)
    handlers = in_process_handlers(settings, JobRunner.from_settings(settings))
    panels, picker = handlers["admin_unlock_form"](TOKEN, request=None)
    assert panels.visible and picker.choices == [("shapes", "shapes"), ("tiny", "tiny")]
    with pytest.raises(gr.Error, match="refused"):
        handlers["admin_unlock_form"]("wrong", request=None)
    assert allowed_sources(SourcePolicy.confined(None)) == ["shapes"]
    assert "`data/` (CLIPDEMO_DATA_ROOT)" in admin_tab.dataset_hint(settings)
    assert str(settings.data_root) not in admin_tab.dataset_hint(settings)


def test_a_cars_head_job_ends_at_100_percent_with_its_curve_and_the_newest_log_line_first(setup):
    """A head's search reports no loss and no epoch, and ends at step 8 of 14: the finished job reads done with a full
    bar, its curve plots the validation accuracy per step, and the log's first line is its last (finished)."""
    from clipdemo.testing import fake_head_trainer

    settings, _ = setup
    runner = JobRunner.from_settings(settings, trainers={"cars-head": fake_head_trainer})
    start = in_process_handlers(settings, runner)["admin_start"]
    start(*start_args(TOKEN, kind="cars-head"), request=None)
    snap = runner.wait(30)
    assert snap["state"] == "finished", snap
    progress = admin_tab.progress_text(snap)
    assert "▓" * 20 in progress and "done in 8 steps" in progress and "step 8/14" not in progress
    curve, log_tail, results, _ = admin_tab.job_views(snap)
    assert curve is not None and [ax.get_xlabel() for ax in curve.axes] == ["step"]
    assert len(curve.axes[0].lines[0].get_xdata()) == 4  # the four candidates scored
    lines = log_tail.splitlines()
    assert "finished" in lines[0] and "started cars-head training" in lines[-1]
    assert "Held-out results" in results and "60.0%" in results


def test_promote_asks_through_the_api_too_and_serve_anyway_takes_the_version(setup):
    """The API's callers meet the same question: /admin_promote compares and serves nothing for a worse version;
    /admin_promote_anyway(token, family, version) serves it."""
    settings, _ = setup
    root = settings.checkpoint_dir
    save_checkpoint(root / "scratch" / "v2-worse", {"w": torch.ones(2)}, {"kind": "fake"}, {"metrics": {"acc1": 0.2}})
    app, served = build_admin_app(settings, JobRunner.from_settings(settings), AdminAuth(TOKEN, **NO_DELAY))
    with launched(app, **launch_kwargs(settings)) as url:
        client = Client(url, verbose=False)
        text, *_ = client.predict(TOKEN, "scratch", "v2-worse", api_name="/admin_promote")
        assert "below the served version's (50.0%)" in text and served_version(root, "scratch") == "v1"
        text, *_ = client.predict(TOKEN, "scratch", "v2-worse", api_name="/admin_promote_anyway")
        assert (
            text.startswith("Promoted scratch version `v2-worse`") and served.checkpoint("scratch").name == "v2-worse"
        )
