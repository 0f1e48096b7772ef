"""Streamlit's server as `kb page` runs it (``python -m kb.serve.streamlit_server run …``, the
same arguments as ``streamlit run``), with its gate closed where the page script cannot close it:

- nothing phones out: Streamlit looks up this machine's public address on checkip.amazonaws.com
  for its start-up banner and for every websocket handshake from a foreign ``Origin``; kb
  answers that lookup with "none" before the server starts;
- uploads (``PUT /_stcore/upload_file/…``) are taken only from a session whose visitor gave
  the access token, when the page requires one (otherwise anyone who can reach the port
  could push files into the server's memory without ever seeing the page);
- the first message to every visitor names the page's script by its file name, not by the
  server path Streamlit sends (``mainScriptPath``).
"""

from __future__ import annotations

import os
import sys

from kb.errors import KBError
from kb.serve.access import check_exposure, session_authorized


def upload_allowed(session_id: str) -> bool:
    """Whether Streamlit may take a file from ``session_id``: always on a page without a
    token, else only once its visitor gave the token; never on an exposed page without one."""
    from streamlit import config

    try:
        token = check_exposure(config.get_option("server.address"))
    except KBError:
        return False
    return token is None or session_authorized(session_id)


def harden() -> None:
    """Apply the rules above to the Streamlit in this process (idempotent)."""
    from streamlit import net_util
    from streamlit.runtime.memory_uploaded_file_manager import MemoryUploadedFileManager

    net_util._external_ip = ""  # "no public address": asked of nobody
    if getattr(MemoryUploadedFileManager.add_file, "kb_gated", False):
        return
    _name_the_script_only()
    take = MemoryUploadedFileManager.add_file

    def add_file(self, session_id: str, file) -> None:
        if not upload_allowed(session_id):
            from starlette.exceptions import HTTPException

            raise HTTPException(status_code=403, detail="the access token is required to upload")
        take(self, session_id, file)

    add_file.kb_gated = True  # type: ignore[attr-defined]
    MemoryUploadedFileManager.add_file = add_file


def _name_the_script_only() -> None:
    from streamlit.runtime.app_session import AppSession

    new_session = AppSession._create_new_session_message

    def create(self, *args, **kwargs):
        msg = new_session(self, *args, **kwargs)
        msg.new_session.main_script_path = os.path.basename(msg.new_session.main_script_path)
        return msg

    AppSession._create_new_session_message = create


def main() -> None:
    harden()
    from streamlit.web.cli import main as streamlit_main

    sys.argv[0] = "streamlit"
    streamlit_main()


if __name__ == "__main__":
    main()
