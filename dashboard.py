"""The visdom dashboard of a training run: a plot per loss, the learning rate, the sample
images, FID, and the run's options; and a visdom server started in the background when none
answers on this machine.

It imports neither torch nor the rest of the project, so that CI can check it against the
visdom release each Python gets, in a small environment (.ci/visdom_check.sh).
"""
import contextlib
import dataclasses
import html
import io
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import warnings

from tqdm import tqdm


class Dashboard:
    """Visdom plots of a run, in one environment named after it: one plot per loss (the
    logged means and a smoothed curve), the learning rate, the six-image panel and the
    options.

    Everything is sent from a background thread, so training never waits for visdom. With
    no server, or when it stops answering, updates are dropped and a connection is tried
    again at most every RETRY_SECONDS. On every (re)connection the environment is cleared
    and the plots are rebuilt from the run's history (the rows of losses.csv), so a
    restarted server or a resumed run shows the whole run, and nothing of an older run
    with the same name.
    """

    RETRY_SECONDS = 10
    TIMEOUT_SECONDS = 5
    SMOOTHING = 0.8  # weight of the past in the exponential moving average
    MIN_IMAGE_WIDTH = 600

    def __init__(self, server, port, env, *, options, history, loss_names):
        self.server, self.port, self.env = server, port, env
        self.options, self.history, self.loss_names = options, history, loss_names
        self.viz, self.last_attempt, self.warned, self.plotted = None, -float("inf"), False, 0
        # visdom's front page shows its empty "main" environment, not this run's.
        self.address = f"{server}:{port}/env/{urllib.parse.quote(env)}"
        self.announced = False
        self.smooth = {}
        self.queue = queue.Queue(maxsize=64)
        self.thread = threading.Thread(target=self._run, name="visdom", daemon=True)
        self.thread.start()

    def plot(self, row):
        """Add a losses.csv row (iteration, the losses, lr) to the plots."""
        self._put(("plot", row))

    def show(self, image, title):
        """Show a (3, H, W) image with values in [0, 1] (a tensor or an array)."""
        self._put(("images", (image, title)))

    def plot_fid(self, row):
        """Add a metrics.csv row (FID of each direction and their mean) to the FID plot."""
        self._put(("fid", row))

    def close(self):
        """Send what is queued; a server that does not answer delays this by TIMEOUT_SECONDS
        at most."""
        self._put(None)
        self.thread.join(timeout=self.TIMEOUT_SECONDS + 1)

    def _put(self, item):
        try:
            self.queue.put_nowait(item)
        except queue.Full:  # visdom is slower than training: drop the update, not the pace
            pass

    def _run(self):
        self._connect()
        while (item := self.queue.get()) is not None:
            if self.viz is None and not self._connect():
                continue
            try:
                self._send(*item)
            except Exception as e:
                self.viz, self.warned = None, True
                _warn(f"visdom stopped answering ({type(e).__name__}); training goes on, and "
                      "the plots come back when the server does")

    def _connect(self):
        if time.monotonic() - self.last_attempt < self.RETRY_SECONDS:
            return False
        self.last_attempt = time.monotonic()
        try:
            viz = _visdom_client(self.server, self.port, self.env, self.TIMEOUT_SECONDS)
            # Raises when no server answers (win_exists would print instead).
            viz._win_exists_wrap("options")
            self.viz = viz
            # Start from an empty environment: it may hold an older run of the same name.
            self.viz.close(win=None)
            table, size = options_table(self.options)
            self.viz.text(table, win="options", opts={"title": "options", **size})
            self._replay()
        except Exception:
            self.viz = None
            if not self.warned:
                _warn(f"no visdom server answers at {self.server}:{self.port}; training goes on "
                      "and connects when one does. Start one with `python -m visdom.server -port "
                      f"{self.port}` or pass --no_visdom.")
                self.warned = True
            return False
        if self.warned:
            again = " again" if self.announced else ""  # announced: it answered before
            tqdm.write(f"visdom: answers{again} at {self.server}:{self.port}; plots rebuilt from "
                       "losses.csv")
            self.warned = False
        if not self.announced:
            tqdm.write(f"visdom: this run's plots are at {self.address}")
            self.announced = True
        return True

    def _replay(self):
        rows = self.history()
        self.smooth, self.plotted = {}, 0
        if rows:
            self._lines(rows, update=None)

    def _send(self, kind, payload):
        if kind == "images":
            image, title = payload
            # Small training crops are shown enlarged, at least MIN_IMAGE_WIDTH pixels wide.
            height, width = image.shape[-2:]
            scale = max(1.0, self.MIN_IMAGE_WIDTH / width)
            self.viz.image(image, win="images", opts={"title": title, "width": round(width * scale),
                                                      "height": round(height * scale)})
        elif kind == "fid":
            names = ("fid_A2B", "fid_B2A", "mean_fid")
            self.viz.line(X=[[payload["epoch"]] * 3], Y=[[payload[n] for n in names]], win="fid",
                          update="append", opts={"title": "FID (test split)", "xlabel": "epoch",
                                                 "legend": list(names)})
        elif payload["iteration"] > self.plotted:  # rows up to `plotted` came with a replay
            self._lines([payload], update="append")

    def _lines(self, rows, update):
        x = [row["iteration"] for row in rows]
        for name in self.loss_names:
            raw = [row[name] for row in rows]
            smoothed = [self._smoothed(name, value) for value in raw]
            self.viz.line(X=[[i, i] for i in x], Y=[list(pair) for pair in zip(raw, smoothed)],
                          win=name, update=update,
                          opts={"title": name, "xlabel": "iteration", "showlegend": True,
                                "legend": [name, f"{name} (smoothed)"]})
        # A log axis: on a linear one from -1 to 1, visdom 0.2.4's default, 2e-4 reads as 0.
        self.viz.line(X=x, Y=[row["lr"] for row in rows], win="lr", update=update,
                      opts={"title": "learning rate", "xlabel": "iteration", "legend": ["lr"],
                            "ytype": "log"})
        self.plotted = x[-1]

    def _smoothed(self, name, value):
        """Bias-corrected exponential moving average, as TensorBoard's smoothing."""
        average, n = self.smooth.get(name, (0.0, 0))
        average, n = self.SMOOTHING * average + (1 - self.SMOOTHING) * value, n + 1
        self.smooth[name] = (average, n)
        return average / (1 - self.SMOOTHING ** n)


# A visdom server of our own, when none answers

LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
SERVER_START_SECONDS = 60  # visdom fetches its web assets from CDNs at its first start
ASSETS_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "scripts",
                             "visdom_assets.sh")


@dataclasses.dataclass
class Server:
    """Whether the dashboard has a visdom server to talk to, and the process id of the one
    this run started (None when it was already there)."""
    answers: bool
    pid: int | None = None

    def stop_command(self):
        return f"taskkill /PID {self.pid} /F" if os.name == "nt" else f"kill {self.pid}"


def ensure_server(server, port, log_path):
    """Start `python -m visdom.server` in the background when nothing answers at a local
    server's port; it outlives training so that the plots can still be looked at. Offline,
    where visdom cannot fetch its web assets from CDNs, scripts/visdom_assets.sh installs them
    from the npm registry (when npm is there) and the server is started again. Says in one line
    why there is no dashboard when there is none; training goes on either way."""
    if urllib.parse.urlsplit(server).hostname not in LOCAL_HOSTS:
        return Server(answers=True)  # another machine's: Dashboard warns if it does not answer
    found = what_answers(server, port)
    if found != "nothing":
        if found == "other":
            _warn(f"port {port} answers, but not as visdom: no dashboard for this run (choose a "
                  "free port with --visdom_port)")
        return Server(answers=found == "visdom")
    tqdm.write(f"visdom: nothing answers on port {port}; starting a server (log: {log_path})")
    pid = _start_server(server, port, log_path)
    if pid is None and not _assets_built() and shutil.which("npm") and shutil.which("bash"):
        tqdm.write("visdom: could not fetch its web assets; installing them from the npm "
                   "registry (scripts/visdom_assets.sh)")
        pid = _start_server(server, port, log_path) if _install_assets(log_path) else None
    if pid is None:
        _warn(f"the visdom server did not start (its log: {log_path}); training goes on "
              "without the dashboard. Offline, install visdom's web assets once with `bash "
              "scripts/visdom_assets.sh` (needs npm), or pass --no_visdom.")
        return Server(answers=False)
    started = Server(answers=True, pid=pid)
    tqdm.write(f"visdom: server started (pid {pid}); it keeps running after training, stop it "
               f"with `{started.stop_command()}`")
    return started


def what_answers(server, port):
    """'nothing' when no process listens on the port, else 'visdom' or 'other'."""
    host = urllib.parse.urlsplit(server).hostname
    try:
        socket.create_connection((host, port), timeout=2).close()
    except OSError:
        return "nothing"
    try:
        with urllib.request.urlopen(f"{server}:{port}/", timeout=5) as response:
            page = response.read(1 << 16)
    except (urllib.error.URLError, OSError, ValueError):
        return "other"
    return "visdom" if b"<title>visdom</title>" in page else "other"


def _start_server(server, port, log_path):
    """The pid of a visdom server started on port and answering, or None (it was stopped)."""
    detached = ({"creationflags": subprocess.CREATE_NEW_PROCESS_GROUP
                 | subprocess.DETACHED_PROCESS} if os.name == "nt"
                else {"start_new_session": True})  # Ctrl-C in training does not reach it
    with open(log_path, "ab") as log:
        process = subprocess.Popen([sys.executable, "-m", "visdom.server", "-port", str(port)],
                                   stdin=subprocess.DEVNULL, stdout=log, stderr=log, **detached)
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline and process.poll() is None:
        if what_answers(server, port) == "visdom":
            return process.pid
        time.sleep(0.2)
    process.kill()
    process.wait()
    return None


def _assets_built():
    import visdom
    return os.path.exists(os.path.join(os.path.dirname(visdom.__file__), "static",
                                       "version.built"))


def _install_assets(log_path):
    with open(log_path, "ab") as log:
        return subprocess.run(["bash", ASSETS_SCRIPT], stdin=subprocess.DEVNULL, stdout=log,
                              stderr=log, env={**os.environ, "PYTHON": sys.executable}
                              ).returncode == 0


# The options table's metrics in pixels, generous for bold 12px sans-serif: a character, a line.
CHAR_WIDTH, LINE_HEIGHT = 7, 17
OPTIONS_COLUMNS = 3  # name = value pairs side by side
SHORT_OPTION = 30  # characters of "name = value" that share a row; longer ones take a row each


def options_table(options):
    """The run's options as an HTML table, and the pane size (width and height in pixels)
    that shows all of it: visdom 0.3.0 opens a text pane that overflows scrolled to its end."""
    cells = [(name, json.dumps(value)) for name, value in options.items()]
    length = {cell: len(" = ".join(cell)) for cell in cells}
    short = [cell for cell in cells if length[cell] <= SHORT_OPTION]
    long = [cell for cell in cells if length[cell] > SHORT_OPTION]
    rows = [short[i:i + OPTIONS_COLUMNS] for i in range(0, len(short), OPTIONS_COLUMNS)]
    column = max((length[cell] for cell in short), default=SHORT_OPTION) + 2
    width = OPTIONS_COLUMNS * column  # in characters
    lines = len(rows) + sum(-(-length[cell] // width) for cell in long)
    body = "".join("<tr>" + "".join(_option_cell(cell) for cell in row) + "</tr>" for row in rows)
    body += "".join(f"<tr>{_option_cell(cell, span=OPTIONS_COLUMNS)}</tr>" for cell in long)
    table = f'<table style="font-size: 12px; line-height: {LINE_HEIGHT}px">{body}</table>'
    return table, {"width": width * CHAR_WIDTH + 40, "height": lines * LINE_HEIGHT + 50}


def _option_cell(cell, span=1):
    name, value = (html.escape(part) for part in cell)
    style = "padding: 0 1ch; word-break: break-all; vertical-align: top"
    return f'<td colspan="{span}" style="{style}"><b>{name}</b> = {value}</td>'


def _visdom_client(server, port, env, timeout):
    import visdom

    class Client(visdom.Visdom):
        def _handle_post(self, url, data=None):
            # visdom's own requests have no timeout: a hung server would hang this thread.
            return self.session.post(url, data=data or {}, timeout=timeout).text

    # visdom logs a session line and a traceback per failed request; our warnings say what
    # the user needs.
    logging.getLogger("visdom").setLevel(logging.CRITICAL)
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return Client(server=server, port=port, env=env, raise_exceptions=True,
                      use_incoming_socket=False)


def _warn(message):
    tqdm.write(f"warning: {message}", file=sys.stderr)  # on its own line, above any progress bar
