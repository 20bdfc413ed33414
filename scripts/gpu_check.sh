#!/usr/bin/env bash
# What a CUDA GPU does with this repository, meant to fit in ten minutes (not yet run on a
# GPU): is it correct there, and how fast is it. Prints each section and writes them to OUT/gpu_check.md (with each
# benchmark's JSON and each command's log beside it).
#
#   bash scripts/gpu_check.sh OUT            on a machine with a CUDA GPU
#   bash scripts/gpu_check.sh --smoke OUT    every section at tiny sizes on the CPU, so that
#                                            CI keeps this script working
#
# Correctness: one fp32 step on the GPU against the same step on the CPU (same weights, same
# inputs, TF32 off); the bf16 and fp16 paths for 50 steps; a run resumed on the GPU against an
# uninterrupted one; torchrun with one process (NCCL) against a plain run; test.py and
# evaluate.py on the GPU against the CPU. Speed: benchmark.py at 256x256 for batch 1, 4 and 8
# in fp32, bf16, bf16 + channels_last and bf16 + compile, the authors' step (tests/authors.py)
# in fp32, translation at batch 1 and 16, and a video translated as test.py does (frames/s).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python}

die() {
    echo "gpu_check.sh: error: $1" >&2
    exit 2
}

case "${1:-}" in -h | --help)
    sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
esac
smoke=0
if [ "${1:-}" = --smoke ]; then
    smoke=1
    shift
fi
[ $# -eq 1 ] || die "usage: bash scripts/gpu_check.sh [--smoke] OUT"
out=$1
mkdir -p "$out" 2>/dev/null || die "cannot make the folder $out"
out=$(cd "$out" && pwd)
report="$out/gpu_check.md"

if [ $smoke = 1 ]; then
    device=cpu size=32 tiny=(--ngf 8 --ndf 8 --n_blocks 2) batches=(1) amp_steps=20 iters=2 images=6 frames=12
else
    "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())' 2>/dev/null ||
        die "no CUDA GPU here (torch.cuda.is_available() is False); on a CPU, --smoke runs every section at tiny sizes"
    device=cuda size=256 tiny=() batches=(1 4 8) amp_steps=50 iters=20 images=24 frames=240
fi

say() {  # a line of the report, also printed
    echo "$*" | tee -a "$report"
}

run() {  # a command whose output goes to a log under OUT; its last line is shown if it fails
    local log="$out/$1.log"
    shift
    if ! "$@" >"$log" 2>&1; then
        echo "gpu_check.sh: error: '$*' failed: $(tail -n 1 "$log")" >&2
        exit 1
    fi
}

: >"$report"
say "# GPU check ($([ $smoke = 1 ] && echo "smoke run on the CPU" || echo "$size x $size"))"
say ""
say "$("$PYTHON" - "$device" <<'EOF'
import platform, subprocess, sys, torch
device = torch.device(sys.argv[1])
if device.type == "cuda":
    driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                            capture_output=True, text=True).stdout.strip() or "unknown"
    p = torch.cuda.get_device_properties(device)
    where = (f"{p.name}, compute capability {p.major}.{p.minor}, {p.total_memory / 2**30:.0f} GiB, driver {driver}, "
             f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
else:
    where = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
print(f"- {where}\n- torch {torch.__version__}, Python {platform.python_version()}")
EOF
)"

# A small dataset of random images, made here: the check needs no download.
data="$out/data"
"$PYTHON" - "$data" "$images" <<'EOF'
import os, sys
import numpy as np
from PIL import Image
root, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
for folder in ("trainA", "trainB", "testA", "testB"):
    os.makedirs(os.path.join(root, folder), exist_ok=True)
    for i in range(n if folder.startswith("train") else 3):
        pixels = rng.integers(0, 256, (72 + 8 * i, 64 + 4 * i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(root, folder, f"{i}.png"))
EOF

say ""
say "## Correctness"
say ""
say "| check | result | tolerance | pass |"
say "| --- | --- | --- | --- |"
say "$("$PYTHON" - "$device" "$size" "$amp_steps" "${tiny[@]}" <<'EOF'
import math, sys
import torch
from cyclegan import CycleGAN
device, size, amp_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
arch = {flag.lstrip("-"): int(value) for flag, value in zip(sys.argv[4::2], sys.argv[5::2])}
torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
g = torch.Generator().manual_seed(0)
batches = [[torch.rand(1, 3, size, size, generator=g) * 2 - 1 for _ in "AB"] for _ in range(2)]

def losses(on, **options):
    model = CycleGAN(device=on, seed=0, **arch, **options)
    return [model.step(*batch).floats() for batch in batches]

def worst(a, b):
    return max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-8) for x, y in zip(a, b) for k in x)

here, cpu = losses(device), losses("cpu")
difference = worst(here, cpu)
print(f"| fp32 on {device} against the CPU, 2 steps from the same weights and inputs (TF32 off) | "
      f"largest relative loss difference {difference:.1e} | 1e-3 | {'yes' if difference <= 1e-3 else 'NO'} |")
for dtype in (torch.bfloat16, torch.float16):
    model = CycleGAN(device=device, seed=0, amp=True, **arch)
    model.amp_dtype = dtype  # both paths, whatever --amp auto would pick on this device
    model.scaler = torch.amp.GradScaler(model.device.type, enabled=dtype == torch.float16)
    before = [p.clone() for p in model.G_A2B.parameters()]
    steps = [model.step(*batches[i % 2]).floats() for i in range(amp_steps)]
    finite = all(math.isfinite(v) for s in steps for v in s.values())
    # fp16's gradient scaler skips the first steps, whose scaled gradients overflow; it must
    # find a scale that lets the weights move.
    learned = any(not torch.equal(p, q) for p, q in zip(before, model.G_A2B.parameters()))
    name = str(dtype).removeprefix("torch.")
    print(f"| {name} autocast, {amp_steps} steps | losses finite: {finite}; weights changed: {learned}; last loss_G "
          f"{steps[-1]['loss_G']:.3f} (fp32 first: {here[0]['loss_G']:.3f}) | finite, weights change | "
          f"{'yes' if finite and learned else 'NO'} |")
EOF
)"

# --decay_epoch 1 for all, so that the one-epoch run then resumed has the schedule of the two-epoch ones.
train=("$PYTHON" train.py --dataroot "$data" --device "$device" --size "$size" "${tiny[@]}" --no_visdom
       --workers 2 --log_every 1 --save_every 1000 --decay_epoch 1)
run straight "${train[@]}" --output "$out/straight" --n_epochs 2
run first_epoch "${train[@]}" --output "$out/resumed" --n_epochs 1
run resumed "$PYTHON" train.py --dataroot "$data" --output "$out/resumed" --resume --n_epochs 2
run torchrun "$PYTHON" -m torch.distributed.run --standalone --nproc_per_node=1 "${train[@]:1}" \
    --output "$out/torchrun" --n_epochs 2
run test_cpu "$PYTHON" test.py --dataroot "$data" --weights "$out/straight" --results "$out/results_cpu" \
    --device cpu --amp off
run test_here "$PYTHON" test.py --dataroot "$data" --weights "$out/straight" --results "$out/results_here" \
    --device "$device" --amp off
say "$("$PYTHON" - "$out" "$device" <<'EOF'
import csv, os, sys
import numpy as np
from PIL import Image
out, device = sys.argv[1], sys.argv[2]

def losses(run):
    with open(os.path.join(out, run, "losses.csv")) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]

def worst(a, b):
    names = [k for k in a[0] if k.startswith("loss")]
    return max(abs(x[k] - y[k]) / max(abs(y[k]), 1e-8) for x, y in zip(a, b) for k in names)

straight = losses("straight")
for run, what in (("resumed", "one epoch, then --resume for the second"),
                  ("torchrun", "torchrun --nproc_per_node=1")):
    mine = losses(run)
    ok = len(mine) == len(straight) and worst(mine, straight) <= 1e-2
    print(f"| {what}, against an uninterrupted run on {device} | {len(mine)} logged iterations, largest relative "
          f"loss difference {worst(mine, straight):.1e} | 1e-2 | {'yes' if ok else 'NO'} |")
largest = 0
for direction in ("A2B", "B2A"):
    for name in os.listdir(os.path.join(out, "results_cpu", direction)):
        a, b = (np.asarray(Image.open(os.path.join(out, r, direction, name)), dtype=int)
                for r in ("results_cpu", "results_here"))
        largest = max(largest, np.abs(a - b).max())
print(f"| test.py on {device} against the CPU (fp32) | largest pixel difference {largest} of 255 | 2 | "
      f"{'yes' if largest <= 2 else 'NO'} |")
EOF
)"

# evaluate.py needs pytorch-fid's Inception weights, which may not be downloadable here:
# a randomly initialised InceptionV3 checks the plumbing (its FID means nothing).
"$PYTHON" - "$out/random_inception.pth" <<'EOF'
import sys
import torch
from pytorch_fid import inception as fid
made, build = [], fid._inception_v3
fid._inception_v3 = lambda *a, **k: made.append(build(*a, **k)) or made[-1]
fid.load_state_dict_from_url = lambda *a, **k: made[-1].state_dict()
torch.save(fid.fid_inception_v3().state_dict(), sys.argv[1])
EOF
for where in cpu "$device"; do
    run "evaluate_$where" "$PYTHON" evaluate.py --dataroot "$data" --results "$out/results_cpu" \
        --inception "$out/random_inception.pth" --dims 64 --kid_subsets 10 --device "$where" \
        --json "$out/metrics_$where.json"
done
say "$("$PYTHON" - "$out" "$device" <<'EOF'
import json, os, sys
out, device = sys.argv[1], sys.argv[2]
cpu, here = (json.load(open(os.path.join(out, f"metrics_{d}.json"))) for d in ("cpu", device))
difference = max(abs(cpu[d]["fid"] - here[d]["fid"]) / max(abs(cpu[d]["fid"]), 1e-8) for d in ("A2B", "B2A"))
print(f"| evaluate.py on {device} against the CPU, same images (random InceptionV3, 64-d) | largest relative FID "
      f"difference {difference:.1e} | 1e-3 | {'yes' if difference <= 1e-3 else 'NO'} |")
EOF
)"

say ""
say "## Speed ($size x $size)"
say ""
say "| command | batch | s/iteration, median (min-max) | iterations/s | TFLOP/s (share of the bf16 peak) | peak memory | translation images/s |"
say "| --- | --- | --- | --- | --- | --- | --- |"
bench=("$PYTHON" benchmark.py --device "$device" --size "$size" "${tiny[@]}" --iters "$iters" --warmup 3)
for batch in "${batches[@]}"; do
    for options in "--amp off" "--amp on" "--amp on --channels_last" "--amp on --compile"; do
        name="bench_${batch}_$(echo "$options" | tr -d ' -')"
        # shellcheck disable=SC2086
        run "$name" "${bench[@]}" --batch_size "$batch" $options --json "$out/$name.json"
        say "$("$PYTHON" - "$out/$name.json" "python benchmark.py --size $size ${tiny[*]} --batch_size $batch $options" <<'EOF'
import json, sys
# Dense bf16 tensor-core peaks from NVIDIA's data sheets, TFLOP/s, by device name.
PEAKS = {"H100 80GB HBM3": 989.4, "H100 SXM": 989.4, "H100 NVL": 835.5, "H100 PCIe": 756.5, "H200": 989.4,
         "A100": 312.0}
r = json.load(open(sys.argv[1]))
t = r["train_seconds_per_iteration"]
peak = next((v for k, v in PEAKS.items() if k in r["device"]), None)
share = f" ({r['train_tflops_achieved'] / peak:.0%})" if peak else ""
print(f"| `{sys.argv[2]}` | {r['options']['batch_size']} | {t['median']:.4f} ({t['min']:.4f}-{t['max']:.4f}) | "
      f"{r['train_iterations_per_second']:.2f} | {r['train_tflops_achieved']:.2f}{share} | "
      f"{r['peak_memory_mib']:.0f} MiB | {r['translate_images_per_second']:.1f} |")
EOF
)"
    done
    run "authors_$batch" "$PYTHON" tests/authors.py --device "$device" --size "$size" --batch_size "$batch" \
        --iters "$iters" --warmup 3
    say "| \`python tests/authors.py --size $size --batch_size $batch\` (the authors' step, fp32) | $batch | $(
        sed -E 's/.*: ([0-9.]+) s\/iteration median \(min ([0-9.]+), max ([0-9.]+).*/\1 (\2-\3)/' "$out/authors_$batch.log" | tail -n 1) | | | | |"
done
run translate_16 "${bench[@]}" --batch_size 16 --amp on --json "$out/translate_16.json"
say ""
say "Translation at batch 16 (bf16): $("$PYTHON" -c 'import json, sys; print(round(json.load(open(sys.argv[1]))["translate_images_per_second"], 1))' "$out/translate_16.json") images/s."
# A smooth moving picture, made here, translated as test.py translates a video: decoded
# ahead in a thread, through G_A2B in batches, the input and translation encoded behind.
clip="$out/clip.mp4"
"$PYTHON" - "$clip" "$size" "$frames" <<'EOF'
import sys
import av
import numpy as np
path, size, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
y, x = np.mgrid[0:size, 0:size]
with av.open(path, "w") as out:
    stream = out.add_stream("libx264", rate=24)
    stream.width, stream.height, stream.pix_fmt = size, size, "yuv420p"
    for i in range(n):
        pixels = np.stack([(x + 4 * i) % 256, (y + 2 * i) % 256, np.full_like(x, 8 * i % 256)], -1)
        out.mux(stream.encode(av.VideoFrame.from_ndarray(pixels.astype(np.uint8), format="rgb24")))
    out.mux(stream.encode(None))
EOF
say ""
say "| video ($frames frames, $size x $size): command | frames/s, median (min-max) of 3 runs |"
say "| --- | --- |"
for batch in 1 8; do
    run "video_$batch" "${bench[@]}" --iters 1 --batch_size "$batch" --amp on --video "$clip" \
        --json "$out/video_$batch.json"
    say "$("$PYTHON" - "$out/video_$batch.json" "python benchmark.py --size $size ${tiny[*]} --batch_size $batch --amp on --video clip.mp4" <<'EOF'
import json, sys
v = json.load(open(sys.argv[1]))["video_frames_per_second"]
print(f"| `{sys.argv[2]}` | {v['median']:.1f} ({v['min']:.1f}-{v['max']:.1f}) |")
EOF
)"
done
if grep -q '| NO |$' "$report"; then
    echo "gpu_check.sh: error: some checks failed (marked NO in $report)" >&2
    exit 1
fi
echo "gpu_check.sh: report in $report"
