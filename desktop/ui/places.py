"""Where a result is: *Open folder* opens the shown job's folder in the file manager of the computer the app runs
on (offered only to a browser on that computer: anyone else would see it open on someone else's screen), and *Copy
path* puts the folder's path on the clipboard (any browser)."""
import ipaddress
import os
import re
import shutil
import sys

from trellis.core.concurrency import open_detached

from ..jobs import folder as job_folder
from .lazy import gr

FOLDER_LINE = re.compile(r"Folder: `([^`]+)`")

# Runs in the browser: the path of the "Folder:" line of the result's info to the clipboard. The async
# Clipboard API needs a secure origin (localhost is one); a page reached over plain http elsewhere falls back to
# the older copy command. Answers the path, prefixed with "!" when the browser refused both.
COPY_JS = """(info) => {
  const m = /Folder: `([^`]+)`/.exec(info || "");
  if (!m) return "";
  const path = m[1];
  const old = () => {
    const box = document.createElement("textarea");
    box.value = path; box.setAttribute("readonly", ""); box.style.position = "fixed"; box.style.opacity = "0";
    document.body.appendChild(box); box.select();
    let ok = false;
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    box.remove();
    return ok ? path : "!" + path;
  };
  if (navigator.clipboard && window.isSecureContext) {
    return navigator.clipboard.writeText(path).then(() => path, old);
  }
  return old();
}"""


def is_local(request) -> bool:
    """Whether the browser runs on this computer (its connection comes from a loopback address)."""
    host = getattr(getattr(request, "client", None), "host", None) or ""
    if host == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.split("%")[0])
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    return (mapped or address).is_loopback


def file_manager(path: str) -> list | None:
    """The command that shows `path` in this system's file manager; None when there is none (a server without a
    desktop: no display session for one to open in, although xdg-open may be installed)."""
    if sys.platform == "darwin":
        return ["open", path]
    if os.name == "nt":
        return ["explorer", path]
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        return None
    opener = shutil.which("xdg-open") or shutil.which("gio")
    if opener is None:
        return None
    return [opener, "open", path] if os.path.basename(opener) == "gio" else [opener, path]


def shown_folder(app, info) -> "job_folder.JobFolder | None":
    """The job folder named by the result's "Folder:" line, when it is one of this app's outputs folder (the line
    comes from the page, so any other path is refused)."""
    m = FOLDER_LINE.search(info or "")
    if not m:
        return None
    folder = job_folder.find(app.runner.outputs_dir, os.path.basename(m.group(1).rstrip("/\\")))
    if folder is None or os.path.realpath(folder.path) != os.path.realpath(m.group(1)):
        return None
    return folder


def open_folder(app, info, request) -> None:
    if not is_local(request):
        gr.Warning("Open folder works in a browser on the computer the app runs on; use Copy path instead.")
        return
    folder = shown_folder(app, info)
    if folder is None:
        gr.Warning("No job is shown yet: generate one, or pick one in History.")
        return
    command = file_manager(str(folder.path))
    if command is None:
        gr.Warning(f"This computer shows no desktop, so no file manager can open there (Copy path puts the folder "
                   f"on the clipboard). The folder: {folder.path}")
        return
    try:
        # Not waited for: the file manager is the user's window from now on.
        open_detached(command)
    except OSError as err:
        gr.Warning(f"Could not open the file manager ({err.strerror or err}). The folder: {folder.path}")
        return
    gr.Info(f"Opened the job's folder in the file manager: {folder.path}")


def copied(answer) -> None:
    """What the browser's copy did (COPY_JS's answer), said in a toast."""
    if not answer:
        gr.Warning("No job is shown yet: generate one, or pick one in History.")
    elif answer.startswith("!"):
        gr.Warning(f"The browser did not allow copying. The folder: {answer[1:]}")
    else:
        gr.Info(f"Copied: {answer}")


def wire_places(app, demo, open_button, copy_button, info) -> None:
    """Open folder for local browsers only; both buttons usable while a result is shown."""
    quick = dict(api_visibility="private", show_progress="hidden", concurrency_limit=None)

    def local_only(request: gr.Request):
        return gr.update(visible=is_local(request))
    demo.load(local_only, None, open_button, **quick)
    info.change(lambda text: [gr.update(interactive=bool(FOLDER_LINE.search(text or "")))] * 2, info,
                [open_button, copy_button], **quick)

    def on_open(text, request: gr.Request):
        open_folder(app, text, request)
    open_button.click(on_open, info, None, **quick)
    copy_button.click(copied, info, None, js=COPY_JS, **quick)

