"""Start the clipdemo web app: ``python app.py`` (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT are honoured).

Configuration is read from the environment; see the README's "Configuration" section.
"""

import logging
import sys


def main() -> None:
    # Imported here, not at the top: an Admin training runs in a spawned child process, which re-imports this file
    # (as ``__mp_main__``) and should not load Gradio and the UI for nothing.
    from clipdemo.errors import ConfigError
    from clipdemo.hub_sync import pull_at_startup
    from clipdemo.memory import limit_malloc_arenas
    from clipdemo.serving import Served
    from clipdemo.settings import Settings, check_environment

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        check_environment()  # a bad setting is one sentence now, not an error on the first request
    except ConfigError as e:
        sys.exit(f"error: {e}")
    limit_malloc_arenas()
    settings = Settings.from_env()
    log = logging.getLogger("clipdemo")
    log.info(pull_at_startup(settings))
    log.info(Served(settings).startup_line())  # which model answers, and why when it is a stand-in
    # Gradio and the UI after the model: on a first start a PyTorch child process loads it meanwhile.
    from clipdemo.ui.app import build_app, launch_kwargs

    build_app(settings).launch(**launch_kwargs(settings))


if __name__ == "__main__":
    main()
