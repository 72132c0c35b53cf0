"""Admin tab: retrain from the browser (live progress, cancel), list versions with their cards, promote, roll back,
push to / pull from the Hub.

Protection: Gradio serves every event through its queue API whether or not the tab is visible, so EVERY handler
here takes the token as its first input and calls ``auth.check`` before doing anything else; without a
configured token (or, on a Space, an allow-list of Hugging Face accounts) every one of them refuses. The token
is never part of an output, a log line or an error.

Handlers are a few lines over ``clipdemo.jobs``, ``clipdemo.checkpoints`` and ``clipdemo.hub_sync``; the
``api_name`` of each event is listed in ``API_NAMES``. On the page each event runs after a token check with no
outputs (``guarded``), so a refused token is one toast and no panel loses what it showed. Promote asks before
serving a worse or unfinished version (``promote_review``; the second click is ``admin_promote_anyway``).
"""

from pathlib import Path
from typing import NamedTuple

import gradio as gr

from clipdemo import hub_sync
from clipdemo.auth import AdminAuth, AuthError, sign_in_possible
from clipdemo.checkpoints import list_versions, promote, read_card, rollback, served_checkpoint
from clipdemo.data.sources import SourcePolicy, allowed_sources
from clipdemo.data.splits import PROTOCOLS
from clipdemo.encoders import forget_encoder
from clipdemo.families import FAMILIES
from clipdemo.hub_sync import HubSyncError
from clipdemo.jobs import JobError, JobRunner
from clipdemo.plots import confusion_figure, training_curves
from clipdemo.serving import Served
from clipdemo.settings import HUB_REPO_ENV, TOKEN_ENV, hub_repo
from clipdemo.ui.common import user_errors

API_NAMES = (
    "admin_status",
    "admin_start",
    "admin_cancel",
    "admin_versions",
    "admin_card",
    "admin_promote",
    "admin_promote_anyway",
    "admin_rollback",
    "admin_push",
    "admin_pull",
)
METRICS = (
    ("acc1", "top-1 accuracy"),
    ("acc5", "top-5 accuracy"),
    ("mean_per_class_recall", "mean per-class recall"),
    ("weighted_f1", "weighted F1"),
)
INTRO = "Train a new version of a model on a dataset, watch it learn, and choose which version visitors see."
DETAILS = """**Details.** Everything below needs the admin token; the training form and the versions appear once it is
accepted, and the token is checked again on every action.

- **Job kind**: *scratch* is the small CLIP the Pokemon tab serves, trained from nothing; *cars-head* is a small
  classifier fitted on top of a frozen CLIP model's image features for the Cars tab (*head*: that classifier;
  *backbone*: the frozen model).
- **Dataset**: `shapes` is built in; the other choices are the folders in the server's data folder
  (`CLIPDEMO_DATA_ROOT`); a Hugging Face dataset id (`owner/name`) can be typed too.
- **Epochs**: passes over the training images; **seed**: the number that fixes the random choices, so a run can be
  repeated; **preset**: the scratch model's size.
- **Held-out results**: scores on images kept out of training. *Top-1 accuracy*: how often the first guess is
  right; *top-5*: the right class among the first five; *mean per-class recall*: the accuracy of each class,
  averaged; *weighted F1*: a balance of missed and wrong answers, weighted by class size.
- **Promote** serves a version to visitors at once; it asks first when that version scores lower than the served
  one or its run did not finish. **Roll back** serves the previously served version again."""
UNLOCKED = "**Unlocked.** Actions below use this token (or your sign-in); it is checked again on every one."
VERSION_COLUMNS = ["version", "served", "created", "trained on", "held-out acc1", "status"]


def client_of(request: gr.Request | None) -> str | None:
    """Who is knocking, for per-client slowdown (the global count covers address-rotating callers)."""
    return getattr(getattr(request, "client", None), "host", None)


# --- what the tab shows, from a runner snapshot (pure functions, tested directly) --------------------------


def progress_text(snap: dict) -> str:
    if snap.get("state") == "idle":
        return "No training job has run since the app started. Versions written by the CLI are listed below."
    head = f"**Job {snap['id']}: {snap['family']} on `{snap['dataset']}`**: {snap['state']}"
    head += " (stopping…)" if snap.get("stopping") and snap["state"] == "running" else ""
    head += f", version `{snap['version']}`"
    parts = []
    if snap.get("phase") == "encode" and snap.get("total"):
        parts.append(
            f"{_bar(snap.get('done', 0) / snap['total'])} encoding {snap.get('split') or 'images'} "
            f"{snap.get('done', 0)}/{snap['total']}"
        )
    elif snap.get("epoch") is not None:
        parts.append(f"epoch {snap['epoch']}/{snap.get('epochs') or '?'}")
    if snap["state"] == "finished":  # a head's search may end before its planned step count: done is 100%
        parts.append(f"{_bar(1.0)} done in {snap.get('step') or '?'} steps")
    elif snap.get("step") is not None and snap.get("phase") != "encode":
        total = snap.get("total_steps")
        bar = _bar(snap["step"] / total) + " " if total else ""
        parts.append(f"{bar}step {snap['step']}/{total or '?'}")
    if isinstance(snap.get("loss"), (int, float)):
        parts.append(f"loss {snap['loss']:.4f}")
    if isinstance(snap.get("val_acc"), (int, float)):
        parts.append(f"val acc {_pct(snap['val_acc'])}")
    parts.append(f"elapsed {_duration(snap.get('elapsed_s'))}")
    if snap.get("eta_s") is not None and snap["state"] == "running":
        parts.append(f"ETA {_duration(snap['eta_s'])}")
    text = head + "\n\n" + " · ".join(parts)
    if snap.get("error"):
        text += f"\n\n**Error:** {snap['error']}"
    return text


def result_text(snap: dict) -> str:
    result = snap.get("result") or {}
    if snap.get("state") == "finished" or (snap.get("state") == "cancelled" and snap.get("kept")):
        zeroshot = result.get("zeroshot") if isinstance(result.get("zeroshot"), dict) else None  # Cars heads
        rows = [
            f"| {label} | {_pct(result.get(key))} |" + (f" {_pct(zeroshot.get(key))} |" if zeroshot else "")
            for key, label in METRICS
            if isinstance(result.get(key), (int, float))
        ]
        n = f" on {result['n']} held-out images" if result.get("n") else ""
        header = (
            "| metric | trained head | zero-shot |\n|---|---|---|\n" if zeroshot else "| metric | value |\n|---|---|\n"
        )
        table = (header + "\n".join(rows)) if rows else "No metrics were reported."
        note = (
            "" if snap["state"] == "finished" else " It was cancelled: these are the metrics of its best epoch so far."
        )
        return (
            f"### Held-out results{n}\n\n{table}\n\nVersion `{snap['version']}` is written but **not served**: "
            f"promote it below to serve it.{note}"
        )
    return ""


def curve_events(history: list[dict]) -> list[dict]:
    """Loss from training steps, validation accuracy from evaluation events only (training events repeat the
    last validation accuracy, which would plot it at the wrong epoch). A head's search reports no loss and no
    epoch: its evaluations (one per candidate fit) are plotted by step."""
    out = []
    for e in history:
        phase = e.get("phase")
        if phase == "train" and e.get("loss") is not None and "step" in e:
            out.append({"step": e["step"], "loss": e["loss"]})
        elif phase == "eval" and e.get("val_acc") is not None and e.get("epoch") is not None:
            out.append({"epoch": e["epoch"], "val_acc": e["val_acc"]})
        elif phase == "eval" and e.get("val_acc") is not None and e.get("step") is not None:
            out.append({"step": e["step"], "val_acc": e["val_acc"]})
        elif phase is None:
            out.append(e)
    return out


def version_rows(root, family: str) -> list[list]:
    return [
        [
            v["version"],
            "✓" if v["served"] else "",
            v["card"].get("created", ""),
            _trained_on(v["card"]),
            _pct(_metric(v, "acc1"), missing=""),
            version_status(v),
        ]
        for v in list_versions(root, family)
    ]


def version_status(v: dict) -> str:
    """'complete', 'incomplete' or the card's error, with how its run stopped when it did not finish."""
    card = v["card"]
    status = v["error"] or ("complete" if card.get("complete", True) else "incomplete")
    stopped = (card.get("run") or {}).get("stopped")
    return status + (f" ({stopped})" if stopped and stopped != "finished" else "")


def promote_review(root, family: str, version: str, roles=("to serve", "served now")) -> tuple[list[str], str]:
    """Why serving ``version`` needs a second click (no reason: it doesn't), and the comparison shown either way:
    its card's status and held-out metrics beside the served version's (``roles`` head their columns). It asks when
    the run did not finish (cancelled, incomplete, damaged) or when its held-out top-1 accuracy is lower than the
    served one's (or unknown while that is known)."""
    versions = {v["version"]: v for v in list_versions(root, family)}
    candidate = versions.get(version)
    if candidate is None:
        raise JobError(f"There is no {family} version '{version}'; list the versions and choose one.")
    served = next((v for v in versions.values() if v["served"]), None)
    if served is None or served is candidate:
        return [], _comparison([candidate], [roles[0] if served is None else roles[1]])
    reasons = [] if version_status(candidate) == "complete" else [f"its run is {version_status(candidate)}"]
    mine, theirs = _metric(candidate, "acc1"), _metric(served, "acc1")
    if theirs is not None and (mine is None or mine < theirs):
        reasons.append(f"its held-out top-1 accuracy ({_pct(mine)}) is below the served version's ({_pct(theirs)})")
    return reasons, _comparison([candidate, served], list(roles))


def _comparison(versions: list[dict], roles: list[str]) -> str:
    head = "| | " + " | ".join(f"`{v['version']}` ({role})" for v, role in zip(versions, roles)) + " |"
    rows = [
        ("status", [version_status(v) for v in versions]),
        ("trained on", [_trained_on(v["card"]) or "–" for v in versions]),
        *((label, [_pct(_metric(v, key)) for v in versions]) for key, label in METRICS),
    ]
    lines = [head, "|---" * (len(versions) + 1) + "|"] + [f"| {k} | " + " | ".join(c) + " |" for k, c in rows]
    return "\n".join(lines)


def _metric(v: dict, key: str):
    value = (v["card"].get("metrics") or {}).get(key)
    return value if isinstance(value, (int, float)) else None


def _trained_on(card: dict) -> str:
    dataset = card.get("dataset")
    return str((dataset.get("source") if isinstance(dataset, dict) else dataset) or "")


def _pct(value, missing: str = "–") -> str:
    return f"{100 * value:.1f}%" if isinstance(value, (int, float)) else missing


def _bar(fraction: float, width: int = 20) -> str:
    filled = round(max(0.0, min(1.0, fraction)) * width)
    return "▓" * filled + "░" * (width - filled)


def _duration(seconds) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def _head_choices() -> list[str]:
    """The Cars heads, the default first."""
    from clipdemo.heads import DEFAULT_HEAD, HEADS

    return [DEFAULT_HEAD, *(h for h in HEADS if h != DEFAULT_HEAD)]


# --- the handlers: each takes the token first and checks it before anything else -------------------------


class AdminHandlers:
    """The tab's event handlers, a few lines each over the library. Every one takes the token first and Gradio's
    request and sign-in last (``profile`` is injected by Gradio from its signed session, never from the
    request's inputs), and checks them before doing anything else."""

    def __init__(self, served: Served, runner: JobRunner, auth: AdminAuth):
        self.served, self.runner, self.auth = served, runner, auth
        self.root = served.settings.checkpoint_dir

    def check(self, token, request, profile) -> None:
        """The token, or an allow-listed Hugging Face sign-in."""
        self.auth.check(token, client=client_of(request), user=profile.username if profile else None)

    def backbone_specs(self) -> dict:
        """The app's models by opaque key (the page never holds a server path); the scratch one is left out."""
        return {key: value for key, value in self.served.models().items() if key != "scratch"}

    @staticmethod
    def chosen_family(family, refusal: str = "Choose a family.") -> str:
        """``family``, one of ``FAMILIES``: checked before any folder of the checkpoint dir is read."""
        if family not in FAMILIES:
            raise JobError(refusal)
        return family

    def version_folder(self, family, version) -> Path:
        """A version's folder, for names that can only mean one (no separators, no dot names)."""
        refusal = "Choose a family and one of its versions."
        if not isinstance(version, str) or not version or Path(version).name != version or version.startswith("."):
            raise JobError(refusal)
        return self.root / self.chosen_family(family, refusal) / version

    def versions_update(self, family) -> tuple:
        """The versions table and the version dropdown (the served one chosen) of ``family``."""
        rows = version_rows(self.root, family)
        names = [r[0] for r in rows]
        current = served_checkpoint(self.root, family)
        return rows, gr.Dropdown(choices=names, value=current.name if current else (names[0] if names else None))

    def status(self, seen) -> tuple:
        """Progress, curve, log, results and confusion; figures are redrawn only when the job moved on."""
        snap = self.runner.snapshot()
        key = f"{snap.get('id')}:{snap['state']}:{len(snap.get('history', []))}:{(snap.get('log') or [''])[-1]}"
        views = job_views(snap) if key != seen else tuple(gr.skip() for _ in range(4))
        return (UNLOCKED, progress_text(snap), *views, gr.Timer(active=True), key)

    # ---- the events' handlers; their names are the events' api_names

    def admin_status(self, token, seen, request: gr.Request, profile: gr.OAuthProfile | None = None):
        self.check(token, request, profile)
        return self.status(seen)

    def admin_unlock_check(self, token, request: gr.Request, profile: gr.OAuthProfile | None = None) -> None:
        """Unlock's first step, with no outputs: a refusal is one toast, not an "Error" badge on every panel."""
        self.check(token, request, profile)

    def admin_poll(self, token, seen, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The timer's tick: refused like the others, but quietly (no toast every second; the timer stops)."""
        try:
            self.check(token, request, profile)
        except AuthError as e:
            return (f"**Locked.** {e}", *(gr.skip() for _ in range(5)), gr.Timer(active=False), None)
        return self.status(seen)

    def admin_start(
        self,
        token,
        kind,
        dataset,
        config,
        preset,
        epochs,
        max_seconds,
        seed,
        backbone,
        head,
        split,
        request: gr.Request,
        profile: gr.OAuthProfile | None = None,
    ):
        self.check(token, request, profile)
        spec = self.backbone_specs().get(backbone, (None, None))[1]  # an opaque key in, a spec out
        # the form's 0 epochs / 0 seconds mean the default / no budget; the runner checks every option
        options = dict(preset=preset, epochs=epochs or None, max_seconds=max_seconds or None, seed=seed)
        snap = self.runner.start(kind, dataset, config=config, backbone=spec, head=head, split=split, **options)
        started = f"Started job {snap['id']}: {kind} on `{snap['dataset']}` into version `{snap['version']}`."
        return started, gr.Timer(active=True)

    def admin_cancel(self, token, request: gr.Request, profile: gr.OAuthProfile | None = None):
        self.check(token, request, profile)
        return self.runner.cancel()

    def admin_versions(self, token, family, request: gr.Request, profile: gr.OAuthProfile | None = None):
        self.check(token, request, profile)
        return self.versions_update(self.chosen_family(family))

    def admin_card(self, token, family, version, request: gr.Request, profile: gr.OAuthProfile | None = None):
        self.check(token, request, profile)
        return read_card(self.version_folder(family, version)) if version else None

    def admin_unlock_form(self, token, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Unlock's last step: the panels shown, the dataset picker filled with what the server allows."""
        self.check(token, request, profile)
        allowed = allowed_sources(SourcePolicy.confined(self.served.settings.data_root))
        return gr.Column(visible=True), gr.Dropdown(choices=allowed)

    def admin_promote(self, token, family, version, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """Serve ``version`` at once when it is no worse than the served one; else show the comparison and offer
        the "serve it anyway" button (``admin_promote_anyway``), serving nothing yet."""
        self.check(token, request, profile)
        folder = self.version_folder(family, version)
        reasons, comparison = promote_review(self.root, family, folder.name)
        if not reasons:
            return self.serve(family, folder)
        asked = (
            f"**Check before serving:** {' and '.join(reasons)}.\n\n{comparison}\n\n"
            f"Nothing was changed: `{folder.name}` is served only if you press *Serve {folder.name} anyway*."
        )
        anyway = gr.Button(f"Serve {folder.name} anyway", visible=True)
        return asked, gr.skip(), gr.skip(), anyway, family, folder.name

    def admin_promote_anyway(self, token, family, version, request: gr.Request, profile: gr.OAuthProfile | None = None):
        """The second click: serve ``version`` whatever the comparison said (the page sends the version it showed)."""
        self.check(token, request, profile)
        folder = self.version_folder(family, version)
        return self.serve(family, folder)

    def serve(self, family: str, folder: Path) -> tuple:
        """Promote ``folder`` and say so beside the comparison with the version it replaces."""
        comparison = promote_review(self.root, family, folder.name, ("served now", "served before"))[1]
        before = served_checkpoint(self.root, family)
        forget(before, promote(self.root, family, folder.name))
        served = f"Promoted {family} version `{folder.name}`: it is served from now on (no restart needed).\n\n"
        return served + comparison, *self.versions_update(family), gr.Button(visible=False), gr.skip(), ""

    def admin_rollback(self, token, family, request: gr.Request, profile: gr.OAuthProfile | None = None):
        self.check(token, request, profile)
        family = self.chosen_family(family)
        before = served_checkpoint(self.root, family)
        folder = rollback(self.root, family)
        forget(before, folder)
        return f"Rolled {family} back to version `{folder.name}`.", *self.versions_update(family)

    def admin_push(self, token, family, version, request: gr.Request, profile: gr.OAuthProfile | None = None):
        self.check(token, request, profile)
        repo = hub_repo()
        if not repo:
            raise HubSyncError(f"Set {HUB_REPO_ENV} (and the {TOKEN_ENV} secret) to push to the Hub.")
        if version:
            folder = self.version_folder(family, version)
        else:  # the served one
            folder = served_checkpoint(self.root, self.chosen_family(family))
        if folder is None:
            raise JobError("Choose a version to push.")
        return hub_sync.push_checkpoint(folder, repo, family=family)

    def admin_pull(self, token, family, request: gr.Request, profile: gr.OAuthProfile | None = None):
        self.check(token, request, profile)
        repo = hub_repo()
        if not repo:
            raise HubSyncError(f"Set {HUB_REPO_ENV} to pull from the Hub.")
        family = self.chosen_family(family)
        before = served_checkpoint(self.root, family)
        folder = hub_sync.pull_checkpoint(repo, self.root, family)
        forget(before, folder)
        return f"Pulled {family} from {repo} as version `{folder.name}` and promoted it.", *self.versions_update(family)


def job_views(snap: dict) -> tuple:
    """The training curve, the log tail, the results text and the confusion matrix of a runner snapshot."""
    events = curve_events(snap.get("history", []))
    curve = training_curves(events, title=f"{snap['family']} on {snap['dataset']}") if events else None
    result = snap.get("result") or {}
    confusion = (
        confusion_figure(result["confusion"], result["class_names"])
        if result.get("confusion") and result.get("class_names")
        else None
    )
    return curve, "\n".join(reversed(snap.get("log", []))), result_text(snap), confusion  # newest line on top


def forget(*folders) -> None:
    """Drop cached encoders of checkpoint folders whose serving changed (a folder rewritten while training may
    be cached stale)."""
    for folder in folders:
        if folder is not None:
            forget_encoder(str(folder))


# --- the tab: one function per panel, then the events that join them ---------------------------------------


class Unlock(NamedTuple):
    token: gr.Textbox
    button: gr.Button
    status: gr.Markdown


class TrainForm(NamedTuple):
    fields: list  # admin_start's inputs after the token, in its order
    start: gr.Button
    cancel: gr.Button
    status: gr.Markdown


class Watch(NamedTuple):
    """What ``job_views`` fills, after the progress line."""

    progress: gr.Markdown
    curve: gr.Plot
    log: gr.Textbox
    results: gr.Markdown
    confusion: gr.Plot


class Shelf(NamedTuple):
    """The versions panel."""

    family: gr.Radio
    version: gr.Dropdown
    refresh: gr.Button
    promote: gr.Button
    rollback: gr.Button
    push: gr.Button
    pull: gr.Button
    status: gr.Markdown
    table: gr.Dataframe
    card: gr.JSON
    anyway: gr.Button  # promote's second click, shown only when it asks
    pending: tuple  # (family, version): what "Serve it anyway" serves, the version the comparison showed


def build(served: Served, runner: JobRunner, auth: AdminAuth) -> None:
    """The Admin tab. Every event's handler checks the token first; see the module docstring."""
    handlers = AdminHandlers(served, runner, auth)
    gr.Markdown(INTRO, elem_id="admin-intro")
    if not auth.enabled:
        gr.Markdown(f"### Admin is disabled\n\n{disabled_note(served.settings)}", elem_id="admin-disabled")
    with gr.Column(visible=auth.enabled):
        with gr.Accordion("Details", open=False):
            gr.Markdown(DETAILS)
        unlock = unlock_panel(auth)
        with gr.Column(visible=False, elem_id="admin-unlocked") as panels:  # shown by a successful unlock
            form = train_panel(served.settings, handlers.backbone_specs())
            watch = watch_panel()
            shelf = versions_panel()
    timer = gr.Timer(1.0, active=False)
    seen = gr.State(None)
    # each handler checks the token itself; hiding the panels is for people and protects nothing
    status_events(handlers, unlock, watch, shelf, timer, seen, [panels, form.fields[1]])
    train_events(handlers, unlock.token, form, timer)
    version_events(handlers, unlock.token, shelf)


def unlock_panel(auth: AdminAuth) -> Unlock:
    with gr.Row(equal_height=True):
        token = gr.Textbox(label="Admin token", type="password", scale=4, elem_id="admin-token")
        if auth.sign_in and sign_in_possible():  # Gradio's button needs a Space's OAuth (elsewhere: a mock)
            gr.LoginButton(scale=1)
        unlock = gr.Button("Unlock", scale=1, elem_id="admin-unlock")
    how = "Sign in with an allowed Hugging Face account or enter" if auth.sign_in else "Enter"
    lock_status = gr.Markdown(f"**Locked.** {how} the admin token and press Unlock.", elem_id="admin-lock")
    return Unlock(token, unlock, lock_status)


def train_panel(settings, backbone_specs: dict) -> TrainForm:
    with gr.Group():
        gr.Markdown("#### Train")
        with gr.Row():
            # min_width: on a phone each field takes its own line instead of a squeezed column
            kind = gr.Radio(list(FAMILIES), value="scratch", label="Job kind", elem_id="admin-kind", min_width=200)
            dataset = gr.Dropdown(
                ["shapes"],  # the data folder's entries are filled in by a successful unlock
                value="shapes",
                label="Dataset",
                allow_custom_value=True,
                elem_id="admin-dataset",
                info=dataset_hint(settings),
                min_width=320,
            )
            config = gr.Textbox("", label="HF dataset config (optional)", placeholder="e.g. mini", min_width=240)
        with gr.Row():
            epochs = gr.Number(label="Epochs (0: the default)", value=0, precision=0, minimum=0, elem_id="admin-epochs")
            seed = gr.Number(label="Seed", value=0, precision=0, minimum=0)
        with gr.Row():
            with gr.Column():
                gr.Markdown("Scratch CLIP options")
                preset = gr.Dropdown(_preset_choices(), value="default", label="Preset")
                max_seconds = gr.Number(label="Time budget in seconds (0: none)", value=0, minimum=0)
            with gr.Column():
                gr.Markdown("Cars head options")
                backbone = gr.Dropdown(
                    [(name, key) for key, (name, _) in backbone_specs.items()], value="default", label="Backbone"
                )
                heads = _head_choices()
                head = gr.Dropdown(heads, value=heads[0], label="Head", allow_custom_value=True)
                split = gr.Radio(list(PROTOCOLS), value="tutorial", label="Held-out split")
        with gr.Row():
            start = gr.Button("Start training", variant="primary", elem_id="admin-start")
            cancel = gr.Button("Cancel", variant="stop", elem_id="admin-cancel")
        job_status = gr.Markdown(elem_id="admin-job-status")
    fields = [kind, dataset, config, preset, epochs, max_seconds, seed, backbone, head, split]
    return TrainForm(fields, start, cancel, job_status)


def dataset_hint(settings) -> str:
    """Where the picker's folders come from, naming the data folder by its name only (no server path in the page)."""
    if settings.data_root is None:
        return "'shapes' (built in) or a Hugging Face dataset id; set CLIPDEMO_DATA_ROOT to train on folders."
    return (
        f"'shapes' (built in), a folder in the server's data folder `{Path(settings.data_root).name}/` "
        "(CLIPDEMO_DATA_ROOT), or type a Hugging Face dataset id"
    )


def watch_panel() -> Watch:
    progress = gr.Markdown(elem_id="admin-progress")
    with gr.Row():
        curve = gr.Plot(label="Training curves", elem_id="admin-curve", min_width=340)
        log_tail = gr.Textbox(
            label="Log (newest line first)", lines=12, max_lines=12, elem_id="admin-log", min_width=320
        )
    with gr.Row():
        results = gr.Markdown(elem_id="admin-results", min_width=320)
        confusion = gr.Plot(label="Confusion matrix", elem_id="admin-confusion", min_width=320)
    return Watch(progress, curve, log_tail, results, confusion)


def versions_panel() -> Shelf:
    with gr.Group():
        gr.Markdown("#### Versions")
        with gr.Row():
            family = gr.Radio(list(FAMILIES), value="scratch", label="Family", elem_id="admin-family")
            version = gr.Dropdown([], label="Version", allow_custom_value=True, elem_id="admin-version")
        with gr.Row():
            refresh = gr.Button("List versions", elem_id="admin-list")
            promote_btn = gr.Button("Promote", variant="primary", elem_id="admin-promote")
            rollback_btn = gr.Button("Roll back", elem_id="admin-rollback")
            push = gr.Button("Push to Hub")
            pull = gr.Button("Pull from Hub")
        version_status = gr.Markdown(elem_id="admin-version-status")
        anyway = gr.Button("Serve it anyway", variant="stop", visible=False, elem_id="admin-promote-anyway")
        table = gr.Dataframe(
            headers=VERSION_COLUMNS,
            interactive=False,
            wrap=True,
            elem_id="admin-versions",
            column_widths=["200px", "70px", "180px", "260px", "90px", "160px"],  # a phone scrolls it sideways
        )
        card = gr.JSON(label="Card of the chosen version")
    # hidden fields, not States: the API's callers send them too (a State is no API parameter)
    pending = (gr.Textbox("scratch", visible=False, label="family"), gr.Textbox("", visible=False, label="version"))
    return Shelf(
        family, version, refresh, promote_btn, rollback_btn, push, pull, version_status, table, card, anyway, pending
    )


def guarded(h: AdminHandlers, triggers, handler, inputs: list, outputs, **kwargs):
    """``handler`` after a token check with no outputs: a refused token is one toast, never an "Error" badge on
    each output, and the outputs keep what they showed. ``handler`` checks the token again (API callers skip the
    first step)."""
    checked = gr.on(
        triggers,
        user_errors(h.admin_unlock_check),
        inputs[:1],
        None,
        api_visibility="private",
        show_progress="hidden",
    )
    return checked.success(user_errors(handler), inputs, outputs, **kwargs)


def status_events(
    h: AdminHandlers, unlock: Unlock, watch: Watch, shelf: Shelf, timer: gr.Timer, seen, form: list
) -> None:
    """Unlock shows the panels, the job and the versions; the timer's tick keeps the job's panel current."""
    outputs = [unlock.status, *watch, timer, seen]
    unlocked = guarded(
        h,
        [unlock.button.click, unlock.token.submit],
        h.admin_status,
        [unlock.token, seen],
        outputs,
        api_name="admin_status",
        show_progress="hidden",
    )
    unlocked = unlocked.success(
        user_errors(h.admin_unlock_form), [unlock.token], form, api_visibility="private", show_progress="hidden"
    )
    unlocked.success(
        user_errors(h.admin_versions),
        [unlock.token, shelf.family],
        [shelf.table, shelf.version],
        api_name="admin_unlock_versions",
        api_visibility="private",
        show_progress="hidden",  # like the unlock's other steps: a local listing, no overlay flashing on the table
    )
    timer.tick(
        user_errors(h.admin_poll),
        [unlock.token, seen],
        outputs,
        api_name="admin_poll",
        api_visibility="private",
        show_progress="hidden",
    )


def train_events(h: AdminHandlers, token: gr.Textbox, form: TrainForm, timer: gr.Timer) -> None:
    guarded(h, [form.start.click], h.admin_start, [token, *form.fields], [form.status, timer], api_name="admin_start")
    guarded(h, [form.cancel.click], h.admin_cancel, [token], form.status, api_name="admin_cancel")


def version_events(h: AdminHandlers, token: gr.Textbox, shelf: Shelf) -> None:
    listed = [shelf.table, shelf.version]
    guarded(
        h,
        [shelf.refresh.click, shelf.family.change],
        h.admin_versions,
        [token, shelf.family],
        listed,
        api_name="admin_versions",
    )
    chosen = [token, shelf.family, shelf.version]
    # a file read, fired by unlock and refresh too: no overlay flashing on the card
    guarded(h, [shelf.version.change], h.admin_card, chosen, shelf.card, api_name="admin_card", show_progress="hidden")
    promoted = [shelf.status, *listed, shelf.anyway, *shelf.pending]
    guarded(h, [shelf.promote.click], h.admin_promote, chosen, promoted, api_name="admin_promote")
    guarded(
        h,
        [shelf.anyway.click],
        h.admin_promote_anyway,
        [token, *shelf.pending],
        promoted,
        api_name="admin_promote_anyway",
    )
    guarded(
        h,
        [shelf.rollback.click],
        h.admin_rollback,
        [token, shelf.family],
        [shelf.status, *listed],
        api_name="admin_rollback",
    )
    guarded(h, [shelf.push.click], h.admin_push, chosen, shelf.status, api_name="admin_push")
    guarded(h, [shelf.pull.click], h.admin_pull, [token, shelf.family], [shelf.status, *listed], api_name="admin_pull")


def disabled_note(settings) -> str:
    """What the disabled tab says: how to turn admin on."""
    return (
        "No admin token is configured, so retraining, promoting and rolling back are off, from this page and "
        "from the API alike. To enable them, set the `CLIPDEMO_ADMIN_TOKEN` environment variable (on Hugging "
        "Face Spaces: add a **secret** named `CLIPDEMO_ADMIN_TOKEN` in the Space's settings) and restart the app; "
        "then enter the same token here. On a Space with `hf_oauth: true`, `CLIPDEMO_ADMIN_USERS` (Hugging Face "
        "usernames, comma-separated) lets those accounts in by signing in. Optionally set `CLIPDEMO_DATA_ROOT` "
        "(the only folder training may read) and `CLIPDEMO_CHECKPOINT_DIR` (on Spaces: `/data/checkpoints`, the "
        "persistent storage)."
    )


def _preset_choices() -> list[str]:
    from clipdemo.scratch.config import PRESETS

    return list(PRESETS)
