"""Shared test helpers: tiny generated datasets, running the scripts as a user would, and a
headless Chromium for the pages they write."""
import contextlib
import importlib.util
import io
import os
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# Under pytest-xdist (`-n`), one thread per worker: workers' OpenMP threads, and those of the
# processes they start, would otherwise spin against each other on the same cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    torch.set_num_threads(1)

# Small networks and images so that a whole training run takes seconds on a CPU (--n_epochs
# epochs, none of decay, unless a test adds them); fp32, which
# --amp auto would not be on CPUs with bf16 instructions, so that every machine runs the same.
TINY = ["--size", "32", "--ngf", "8", "--ndf", "8", "--n_blocks", "2", "--n_epochs_decay", "0",
        "--workers", "0", "--device", "cpu", "--no_visdom", "--amp", "off"]


def write_image(path, size=(40, 40), seed=0, mode="RGB"):
    rng = np.random.default_rng(seed)
    w, h = size
    pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    img = Image.fromarray(pixels).convert(mode)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    img.save(path)
    return path


def make_dataset(root, counts=None, size=(40, 40)):
    """trainA/trainB/testA/testB with random images; test images get varied odd sizes."""
    counts = counts or {"trainA": 5, "trainB": 7, "testA": 3, "testB": 2}
    for folder, n in counts.items():
        for i in range(n):
            image_size = size if folder.startswith("train") else (50 + i, 37 + 2 * i)
            write_image(os.path.join(root, folder, f"{folder}_{i}.png"), image_size,
                        seed=sum(map(ord, folder)) * 100 + i)
    return str(root)


def save_generator(path, ngf=8, n_blocks=2):
    """A freshly initialised generator's weights, as a bare state_dict file."""
    from models import Generator
    torch.save(Generator(ngf=ngf, n_blocks=n_blocks).state_dict(), path)
    return str(path)


def photo_folder(path, n=1):
    """A folder of n small photos."""
    for i in range(n):
        write_image(os.path.join(path, f"photo_{i}.png"), seed=i)
    return str(path)


@pytest.fixture
def dataset(tmp_path):
    return make_dataset(tmp_path / "data")


def run_script(script, *args, timeout=300, in_process=True):
    """Run train.py or test.py with a command line; returns a CompletedProcess.

    In-process by default, which saves the interpreter start-up (seconds of torch and
    torchvision imports) per call; `in_process=False` runs a real subprocess.
    """
    argv = [str(a) for a in args]
    if not in_process:
        return subprocess.run([sys.executable, os.path.join(ROOT, script), *argv],
                              capture_output=True, text=True, timeout=timeout)
    out, err, code = io.StringIO(), io.StringIO(), 0
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            load_script(script).main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
    return subprocess.CompletedProcess(script, code, out.getvalue(), err.getvalue())


def load_script(script):
    """Import a top-level script as a module (test.py would clash with the stdlib's test)."""
    name = "script_" + os.path.basename(script).removesuffix(".py")
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, script))
        sys.modules[name] = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(sys.modules[name])
    return sys.modules[name]


WEIGHTS = ("netG_A2B.pth", "netG_B2A.pth", "netD_A.pth", "netD_B.pth")


def assert_same_weights(dir_a, dir_b):
    """The four weight files of two training outputs are bit-identical."""
    for name in WEIGHTS:
        a, b = (torch.load(os.path.join(d, name), weights_only=True) for d in (dir_a, dir_b))
        assert a.keys() == b.keys()
        for key in a:
            assert torch.equal(a[key], b[key]), f"{name} {key} differs"


def assert_user_error(result, *words):
    """Exit status 2, one line on stderr naming the problem, no traceback."""
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.stderr
    for word in words:
        assert word in lines[0], lines[0]


@pytest.fixture(autouse=True)
def cpu_without_bf16(monkeypatch):
    """Tests run as on a CPU without bf16 instructions, where --amp auto means fp32 and the
    pixels are the same on every machine CI lands on (AMX, AVX512-BF16 or neither); tests of
    bf16 patch the CPU's capabilities again, or pass --amp on."""
    real = getattr(torch.cpu, "get_capabilities", dict)
    monkeypatch.setattr(torch.cpu, "get_capabilities", lambda: {
        k: v for k, v in real().items() if k not in ("amx_bf16", "avx512_bf16")}, raising=False)


@contextlib.contextmanager
def one_cpu_thread():
    """Run torch single-threaded here and in the processes started meanwhile. Multi-threaded
    CPU kernels (MKL's among them) now and then differ in the last bit from one run to the
    next, even without any interruption; tests of bit-identical results rule that out."""
    names = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")
    saved_env, saved_threads = {k: os.environ.get(k) for k in names}, torch.get_num_threads()
    os.environ.update(dict.fromkeys(names, "1"))
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(saved_threads)
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture
def single_thread():
    with one_cpu_thread():
        yield


GPU_MEMORY = 80 << 30  # what the fake GPU reports free: an H100's


@pytest.fixture
def fake_cuda(monkeypatch):
    """Run CUDA code paths without a GPU (../shared/notes/cuda-without-a-gpu.md): inside, tensors
    on "cuda" have shapes, dtypes and devices but no values, mixing them with CPU tensors fails
    as on a GPU, and what torch.cuda would ask the driver is patched: an Ampere-class GPU with
    GPU_MEMORY free. The fixture is the mode, for `with fake_cuda:`; networks made before it
    move with .to("cuda") inside. torch.cuda.is_available stays False, since moving a module
    asks the driver when it is True: patch it only while making a CUDA autocast."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    for name, value in {"is_bf16_supported": True, "device_count": 1,
                        "get_device_capability": (9, 0), "mem_get_info": (GPU_MEMORY, GPU_MEMORY),
                        "memory_reserved": 0, "memory_allocated": 0}.items():
        monkeypatch.setattr(torch.cuda, name, lambda *a, value=value, **k: value)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    return FakeTensorMode(allow_non_fake_inputs=True)


@pytest.fixture
def fp32_precision():
    """torch's process-wide fp32 precision for CUDA convolutions, restored afterwards:
    fp32_precision() reads it."""
    saved = torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision
    yield lambda: (torch.backends.cudnn.conv.fp32_precision,
                   torch.backends.cuda.matmul.fp32_precision)
    torch.backends.cudnn.conv.fp32_precision, torch.backends.cuda.matmul.fp32_precision = saved


class OpWatch(TorchDispatchMode):
    """Inside, `seen(func, args, out)` is called for every aten operation."""

    def __init__(self, seen):
        super().__init__()
        self.seen = seen

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.seen(func, args, out)
        return out


class LargestTensor(OpWatch):
    """The most elements of any tensor made on `device_type` inside: `.largest`."""

    def __init__(self, device_type):
        super().__init__(self.record)
        self.device_type, self.largest = device_type, 0

    def record(self, func, args, out):
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.device.type == self.device_type:
                self.largest = max(self.largest, t.numel())


class DeviceCopies(OpWatch):
    """The bytes of each copy between devices made inside: `.to_device` (from the CPU to
    another device) and `.to_host`, lists of sizes in order."""

    def __init__(self):
        super().__init__(self.record)
        self.to_device, self.to_host = [], []

    def record(self, func, args, out):
        if func is torch.ops.aten._to_copy.default and args[0].device != out.device:
            copies = self.to_device if args[0].device.type == "cpu" else self.to_host
            copies.append(args[0].nbytes)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_visdom_server(port, env_path, module=False):
    """A real visdom server on a loopback port, storing its environments in env_path. By
    default it starts without visdom's check for web assets (the page is not needed);
    `module=True` runs `python -m visdom.server` exactly as a user would."""
    if module:
        command = [sys.executable, "-m", "visdom.server", "-port", str(port),
                   "-env_path", str(env_path)]
    else:
        command = [sys.executable, "-c", "import sys; from visdom.server.run_server import main; "
                   f"sys.argv = ['visdom', '-port', '{port}', '-env_path', sys.argv[1]]; main()",
                   str(env_path)]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return server
        time.sleep(0.2)
    server.kill()
    raise RuntimeError(f"visdom server did not start on port {port}")


def stop(server):
    server.terminate()
    server.wait(timeout=30)


class FileServer:
    """An HTTP server on 127.0.0.1 serving `files` ({path: bytes}) with byte ranges, as the
    authors' server does. Paths in `cut` are cut off halfway on their first request, like
    a dropped connection. `requests` records (path, Range header) of each request."""

    def __init__(self):
        import http.server
        import threading
        self.files, self.cut, self.requests = {}, set(), []
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                data = server.files.get(self.path)
                if data is None:
                    self.send_error(404)
                    return
                start = (int(self.headers["Range"].split("=")[1].split("-")[0])
                         if self.headers.get("Range") else 0)
                if start >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if self.path in server.cut:
                    server.cut.discard(self.path)
                    self.wfile.write(data[start:len(data) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self.wfile.write(data[start:])

            def do_HEAD(self):
                server.requests.append((self.path, "HEAD"))
                data = server.files.get(self.path)
                self.send_response(404 if data is None else 200)
                self.send_header("Content-Length", str(len(data or b"")))
                self.end_headers()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def file_server():
    server = FileServer()
    yield server
    server.close()


def dataset_zip(name, counts=None):
    """A zip in the authors' layout, NAME/{trainA,trainB,testA,testB}/*.jpg, of random images."""
    import zipfile
    counts = counts or {"trainA": 2, "trainB": 2, "testA": 1, "testB": 1}
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for folder, n in counts.items():
            for i in range(n):
                image = io.BytesIO()
                Image.fromarray(
                    np.random.default_rng(i).integers(0, 256, (40, 40, 3), dtype=np.uint8)
                ).save(image, "JPEG")
                z.writestr(f"{name}/{folder}/{i}.jpg", image.getvalue())
    return buffer.getvalue()


CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync", "--disable-quic", "--window-size=1600,1500")


@pytest.fixture
def browser(tmp_path):
    if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)):
        pytest.skip("Chromium is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed (pip install selenium)")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-profile'}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()
