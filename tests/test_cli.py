"""train.py and test.py run as a user runs them: outputs, resume, and one-line errors."""
import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import (ROOT, TINY, WEIGHTS, assert_same_weights, assert_user_error, free_port,
                      load_script, make_dataset, run_script, save_generator, start_visdom_server,
                      stop, write_image)
from models import Generator

DATA = os.path.join(ROOT, "tests", "data")



def train(dataroot, output, *extra):
    return run_script("train.py", "--dataroot", dataroot, "--output", output, *TINY, *extra)


def read_losses(output):
    with open(os.path.join(output, "losses.csv"), newline="") as f:
        return list(csv.DictReader(f))


def test_two_epochs_of_training_then_translation_end_to_end(dataset, tmp_path):
    out = str(tmp_path / "run")
    result = run_script("train.py", "--dataroot", dataset, "--output", out, *TINY,
                        "--n_epochs", "1", "--n_epochs_decay", "1", "--log_every", "2",
                        "--sample_every", "5", "--save_every", "4", in_process=False)
    assert result.returncode == 0, result.stderr
    assert (set(WEIGHTS) | {"checkpoint.pth", "options.json", "losses.csv", "samples"}
            <= set(os.listdir(out)))
    rows = read_losses(out)
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6, 8, 10, 12, 14]  # 7 iterations per epoch
    assert [int(r["epoch"]) for r in rows] == [1, 1, 1, 2, 2, 2, 2]
    assert (float(rows[0]["lr"]) == pytest.approx(2e-4)
            and float(rows[-1]["lr"]) == pytest.approx(1e-4))
    assert (sorted(os.listdir(os.path.join(out, "samples")))
            == ["iter_0000005.png", "iter_0000010.png"])
    # six labelled 32x32 samples, enlarged 4 times: 3 x 128 + 4 x 2 by 2 x (16 + 128) + 3 x 2 pixels
    assert Image.open(os.path.join(out, "samples", "iter_0000005.png")).size == (392, 294)
    checkpoint = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)
    assert (checkpoint["epoch"], checkpoint["pairs"], checkpoint["iteration"]) == (2, 0, 14)

    results = str(tmp_path / "results")
    result = run_script("test.py", "--dataroot", dataset, "--weights", out, "--results", results,
                        "--ngf", "8", "--n_blocks", "2", "--device", "cpu", "--workers", "0",
                        in_process=False)
    assert result.returncode == 0, result.stderr
    assert (sorted(os.listdir(os.path.join(results, "A2B")))
            == ["testA_0.png", "testA_1.png", "testA_2.png"])
    assert sorted(os.listdir(os.path.join(results, "B2A"))) == ["testB_0.png", "testB_1.png"]
    for i in range(3):  # native sizes, not squashed to the training size
        assert (Image.open(os.path.join(results, "A2B", f"testA_{i}.png")).size
                == (50 + i, 37 + 2 * i))
    page = open(os.path.join(results, "index.html")).read()
    assert "src='real_A/testA_1.png'" in page and "src='A2B/testA_1.png'" in page
    assert "src='real_B/testB_0.png'" in page and "src='B2A/testB_0.png'" in page


def test_results_default_to_the_weights_folder_and_the_architecture_to_the_weights(dataset,
                                                                                   tmp_path):
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1").returncode == 0  # --ngf 8 --n_blocks 2
    result = run_script("test.py", "--dataroot", dataset, "--weights", out, "--direction", "B2A",
                        "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert (sorted(os.listdir(os.path.join(out, "results")))
            == [".translated_with.json", "B2A", "index.html", "real_B", "rec_B"])
    result = run_script("test.py", "--input", os.path.join(dataset, "testA"), "--weights", out,
                        "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert (sorted(os.listdir(os.path.join(out, "results_testA", "A2B")))
            == ["testA_0.png", "testA_1.png", "testA_2.png"])


def test_inputs_sharing_a_stem_keep_their_extension_in_the_output_name():
    names = load_script("test.py").output_names(["d/a.jpg", "d/a.png", "d/b.png"])
    assert names == ["a_jpg", "a_png", "b"]


def test_the_schedule_is_the_authors_100_epochs_at_the_full_rate_then_100_of_decay():
    from utils import lr_factor
    train_py = load_script("train.py")
    args, _ = train_py.parse_args(["--dataroot", "d"])
    assert (args.n_epochs, args.n_epochs_decay, train_py.epochs(args)) == (100, 100, 200)
    assert ([lr_factor("linear", e, 100, 100) for e in (99, 100, 199)]
            == pytest.approx([1, 1 - 1 / 101, 1 / 101]))


def test_the_old_decay_epoch_flag_is_one_line_saying_what_to_write_instead(tmp_path):
    result = run_script("train.py", "--dataroot", tmp_path, "--n_epochs", "200",
                        "--decay_epoch", "100")
    assert_user_error(result, "--decay_epoch is now the authors' --n_epochs_decay",
                      "--n_epochs 100 --n_epochs_decay N-100")


def test_a_checkpoint_from_before_the_authors_names_keeps_its_schedule():
    saved = load_script("train.py").saved_options(
        {"options": {"n_epochs": 10, "decay_epoch": 7, "output": "x", "resume": False}})
    assert saved == {"n_epochs": 7, "n_epochs_decay": 3}


def test_resume_into_an_empty_schedule_says_where_the_values_came_from(dataset, tmp_path):
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1").returncode == 0
    result = run_script("train.py", "--dataroot", dataset, "--output", out, "--resume",
                        "--n_epochs", "0")
    assert_user_error(result, "at least one epoch", "options not given again are the checkpoint's")


def test_run_killed_mid_training_then_resumed_ends_bit_identical_to_an_uninterrupted_run(
        tmp_path, single_thread):
    data = make_dataset(tmp_path / "data", {"trainA": 12, "trainB": 9})
    options = ["--n_epochs", "1", "--n_epochs_decay", "2", "--save_every", "2", "--pool_size", "3",
               "--log_every", "1"]
    straight = str(tmp_path / "straight")
    assert train(data, straight, *options).returncode == 0

    killed = str(tmp_path / "killed")
    command = [sys.executable, os.path.join(ROOT, "train.py"), "--dataroot", data,
               "--output", killed, *TINY, *options]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoint = os.path.join(killed, "checkpoint.pth")
    while not os.path.exists(checkpoint) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = torch.load(checkpoint, weights_only=True)["iteration"]
    assert stopped_at < 36, "the run finished before it could be killed"

    resumed = run_script("train.py", "--dataroot", data, "--output", killed, "--resume",
                         in_process=False)
    assert resumed.returncode == 0, resumed.stderr
    assert f"iteration {stopped_at}" in resumed.stdout
    assert_same_weights(straight, killed)
    without_time = [{k: v for k, v in row.items() if k != "seconds"}
                    for row in read_losses(straight)]
    assert [{k: v for k, v in row.items() if k != "seconds"}
            for row in read_losses(killed)] == without_time


def test_resume_drops_log_rows_newer_than_the_checkpoint(dataset, tmp_path):
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1", "--log_every", "1").returncode == 0
    with open(os.path.join(out, "losses.csv"), "a") as f:
        # rows after the checkpoint, the last cut short
        f.write("99,1,1,1,1,1,1,0.0002,1\n100,1,1,1")
    assert run_script("train.py", "--dataroot", dataset, "--output", out, "--resume",
                      "--n_epochs", "2").returncode == 0
    assert [int(r["iteration"]) for r in read_losses(out)] == list(range(1, 15))


def test_resume_keeps_the_options_of_the_run(dataset, tmp_path):
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1", "--lambda_cycle", "5").returncode == 0
    assert run_script("train.py", "--dataroot", dataset, "--output", out, "--resume",
                      "--n_epochs", "2").returncode == 0
    options = torch.load(os.path.join(out, "checkpoint.pth"), weights_only=True)["options"]
    assert (options["lambda_cycle"], options["n_epochs"], options["ngf"],
            options["size"]) == (5.0, 2, 8, 32)



def test_checkpoints_keep_no_cuda_generator_state_and_resume_from_ones_that_do(dataset, tmp_path):
    # One CUDA state per visible GPU was saved once, and restoring them all failed where
    # fewer GPUs were visible; training never draws from a CUDA generator.
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1").returncode == 0
    path = os.path.join(out, "checkpoint.pth")
    checkpoint = torch.load(path, weights_only=True)
    assert set(checkpoint["rng"]) == {"torch"}
    # saved on an 8-GPU machine
    checkpoint["rng"]["cuda"] = [torch.zeros(16, dtype=torch.uint8)] * 8
    torch.save(checkpoint, path)
    result = run_script("train.py", "--dataroot", dataset, "--output", out, "--resume",
                        "--n_epochs", "2")
    assert result.returncode == 0, result.stderr

def test_a_checkpoint_written_before_the_pairs_key_resumes_where_it_stopped(dataset, tmp_path):
    """tests/data/checkpoint_6d34cb7.pth was written by train.py at commit 6d34cb7, when the
    pairs of the epoch under way were kept under "position": conftest's dataset, --size 24
    --ngf 4 --ndf 4 --n_blocks 1 --pool_size 2 --seed 5 --n_epochs 2 --amp off, stopped by
    SIGINT at iteration 10, 3 pairs into epoch 2. That code's own --resume then ended with
    the G_A2B in checkpoint_6d34cb7_resumed_G_A2B.pth."""
    out = tmp_path / "run"
    out.mkdir()
    shutil.copy(os.path.join(DATA, "checkpoint_6d34cb7.pth"), out / "checkpoint.pth")
    result = run_script("train.py", "--dataroot", dataset, "--output", out, "--resume")
    assert result.returncode == 0, result.stderr
    assert "resuming at epoch 2, iteration 10" in result.stdout
    assert "done after 2 epoch(s) and 14 iterations" in result.stdout
    # Compared by what they compute: the biases before each InstanceNorm get no gradient
    # beyond float rounding, so they may drift apart without changing any output.
    probe = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 2 - 1
    expected, resumed = Generator(ngf=4, n_blocks=1), Generator(ngf=4, n_blocks=1)
    expected.load_state_dict(torch.load(os.path.join(DATA, "checkpoint_6d34cb7_resumed_G_A2B.pth")))
    resumed.load_state_dict(torch.load(out / "netG_A2B.pth"))
    torch.testing.assert_close(resumed(probe), expected(probe), rtol=1e-4, atol=1e-5)


def test_resume_refuses_other_architecture_flags(dataset, tmp_path):
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1").returncode == 0
    result = run_script("train.py", "--dataroot", dataset, "--output", out, "--resume",
                        "--ngf", "16")
    assert_user_error(result, "--ngf 16 (checkpoint: 8)")


def test_a_new_run_refuses_to_overwrite_an_existing_one(dataset, tmp_path):
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1").returncode == 0
    before = os.path.getmtime(os.path.join(out, "checkpoint.pth"))
    assert_user_error(train(dataset, out, "--n_epochs", "1"), "already holds a run", "--resume")
    assert os.path.getmtime(os.path.join(out, "checkpoint.pth")) == before


def test_resume_without_a_checkpoint_is_a_user_error(dataset, tmp_path):
    assert_user_error(train(dataset, str(tmp_path / "none"), "--resume"), "no checkpoint")


@pytest.mark.parametrize("flags,words", [
    (["--size", "30"], ["--size 30", "multiple of 4"]),
    (["--load_size", "28"], ["--load_size 28", "at least --size 32"]),
    (["--n_epochs", "-1"], ["--n_epochs -1"]),
    (["--n_epochs_decay", "-1"], ["--n_epochs_decay -1"]),
    (["--batch_size", "0"], ["--batch_size 0"]),
    (["--size", "big"], ["--size", "invalid int value"]),
    (["--size", "16"], ["--size 16", "at least 24"]),
    (["--seed", str(2**70)], ["--seed"]),
    (["--visdom_port", "70000"], ["--visdom_port 70000"]),
    (["--ndf", "0"], ["--ndf 0: must be at least 1"]),
    (["--lambda_identity", "-1"], ["--lambda_identity -1.0: must be at least 0"]),
    (["--no_such_flag"], ["unrecognized arguments"]),
    (["--n_epoch", "3"], ["unrecognized arguments: --n_epoch"]),  # no abbreviations
    (["--gpu_ids", "0"], ["--gpu_ids is an option of the authors' code", "--device"]),
    (["--no_dropout"], ["--no_dropout is an option of the authors' code", "no dropout"]),
    (["--netG", "resnet_6blocks"], ["--netG resnet_6blocks and --n_blocks 2", "give one"]),
    (["--netD", "multiscale"], ["--size 32", "at least 96"]),
    (["--n_layers_D", "0", "--netD", "n_layers"], ["--n_layers_D 0: must be at least 1"]),
    (["--input_nc", "1"], ["--input_nc 1 --output_nc 3", "--lambda_identity 0"]),
    (["--input_nc", "2"], ["--input_nc", "invalid choice"]),
    (["--norm", "group"], ["--norm", "invalid choice"]),
    (["--lr_policy", "cosine", "--n_epochs", "0"], ["--lr_policy cosine", "--n_epochs"]),
])
def test_bad_options_give_one_line_and_exit_status_2(dataset, tmp_path, flags, words):
    assert_user_error(train(dataset, str(tmp_path / "run"), *flags), *words)
    assert not os.path.exists(tmp_path / "run" / "checkpoint.pth")


@pytest.mark.parametrize("flags,words", [
    (["--netG", "unet_256"], ["--size 32", "multiple of 256"]),
    (["--netG", "unet_128", "--size", "128", "--preprocess", "none"],
     ["--netG unet_128", "multiple of 128", "crops"]),
])
def test_a_u_net_needs_crops_of_its_size(dataset, tmp_path, flags, words):
    resnet_blocks = TINY.index("--n_blocks")
    tiny = TINY[:resnet_blocks] + TINY[resnet_blocks + 2:]
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *tiny,
                        *flags)
    assert_user_error(result, *words)


def test_missing_dataroot_is_a_user_error_from_the_real_command_line(tmp_path):
    result = run_script("train.py", "--dataroot", tmp_path / "nope", in_process=False)
    assert_user_error(result, "nope", "no such folder")


def test_missing_domain_is_a_user_error_naming_the_layout(tmp_path):
    data = make_dataset(tmp_path / "data", {"trainA": 2})
    assert_user_error(train(data, str(tmp_path / "run")), "trainB",
                      "expected DIR/trainA and DIR/trainB")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_requested_without_cuda_is_a_user_error(dataset, tmp_path):
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run",
                        "--device", "cuda")
    assert_user_error(result, "--device cuda", "--device cpu")


def test_an_unreachable_visdom_elsewhere_warns_once_and_training_goes_on(dataset, tmp_path):
    args = [a for a in TINY if a != "--no_visdom"]
    # 127.0.0.2: loopback, but not a name train.py starts a server for
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "run", *args,
                        "--n_epochs", "2", "--log_every", "1", "--sample_every", "1",
                        "--visdom_server", "http://127.0.0.2", "--visdom_port", "9")
    assert result.returncode == 0, result.stderr
    messages = re.findall(r"warning: .*", result.stderr)
    assert len(messages) == 1 and "python -m visdom.server -port 9" in messages[0], result.stderr


def test_help_explains_every_option():
    result = run_script("train.py", "--help")
    options = re.findall(r"^\s+(--\w+)", result.stdout, re.M)
    assert {"--dataroot", "--output", "--n_epochs", "--n_epochs_decay", "--batch_size", "--lr",
            "--size", "--load_size", "--lambda_cycle", "--lambda_identity", "--pool_size", "--ngf",
            "--ndf", "--n_blocks", "--device", "--workers", "--seed", "--resume", "--no_visdom",
            "--visdom_server", "--visdom_port", "--sample_every", "--save_every"} <= set(options)
    assert "default: 100" in result.stdout and "--decay_epoch" not in result.stdout


def test_a_single_generator_file_translates_a_folder_of_photos(tmp_path):
    photos = make_dataset(tmp_path / "photos", {"mine": 2})
    weights = save_generator(tmp_path / "horse2zebra.pth")
    results = tmp_path / "out"
    result = run_script("test.py", "--input", os.path.join(photos, "mine"), "--weights", weights,
                        "--results", results, "--ngf", "8", "--n_blocks", "2", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert sorted(os.listdir(results / "A2B")) == ["mine_0.png", "mine_1.png"]


def test_one_image_file_as_input_is_translated_into_results_named_after_it(tmp_path):
    photo = write_image(str(tmp_path / "holiday.jpg"))
    weights = save_generator(tmp_path / "g.pth")
    result = run_script("test.py", "--input", photo, "--weights", weights, "--workers", "0",
                        "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert os.listdir(tmp_path / "results_holiday" / "A2B") == ["holiday.png"]


def test_one_file_that_is_neither_image_nor_video_is_a_user_error(tmp_path):
    notes = tmp_path / "notes.txt"
    notes.write_text("hello")
    result = run_script("test.py", "--input", notes,
                        "--weights", save_generator(tmp_path / "g.pth"))
    assert_user_error(result, f"{notes}: not an image or video file")


def test_a_mistake_found_before_translating_leaves_no_results_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_script("test.py", "--input", empty,
                        "--weights", save_generator(tmp_path / "g.pth"),
                        "--results", tmp_path / "out")
    assert_user_error(result, "no usable images or videos")
    assert not (tmp_path / "out").exists()


def test_checkpoint_pth_is_accepted_as_weights(dataset, tmp_path):
    out = str(tmp_path / "run")
    assert train(dataset, out, "--n_epochs", "1").returncode == 0
    result = run_script("test.py", "--dataroot", dataset, "--weights",
                        os.path.join(out, "checkpoint.pth"), "--results", tmp_path / "res",
                        "--ngf", "8", "--n_blocks", "2", "--workers", "0")
    assert result.returncode == 0, result.stderr
    assert (len(os.listdir(tmp_path / "res" / "A2B")) == 3
            and len(os.listdir(tmp_path / "res" / "B2A")) == 2)


def test_a_generator_of_another_architecture_names_the_flags_that_fit(dataset, tmp_path):
    weights = save_generator(tmp_path / "g.pth", ngf=16, n_blocks=3)
    result = run_script("test.py", "--input", os.path.join(dataset, "testA"), "--weights", weights,
                        "--results", tmp_path / "res", "--ngf", "8", "--n_blocks", "2")
    assert_user_error(result, "g.pth", "--ngf 16 --n_blocks 3")


def test_missing_weights_name_the_file(dataset, tmp_path):
    result = run_script("test.py", "--dataroot", dataset, "--weights", tmp_path)
    assert_user_error(result, "has no netG_A2B.pth or latest_net_G_A.pth")


def test_a_file_that_is_not_a_checkpoint_is_refused(dataset, tmp_path):
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    result = run_script("test.py", "--input", os.path.join(dataset, "testA"),
                        "--weights", tmp_path / "junk.pth")
    assert_user_error(result, "junk.pth", "not a weights file")


def test_one_generator_file_for_both_directions_is_refused(dataset, tmp_path):
    weights = save_generator(tmp_path / "g.pth")
    assert_user_error(run_script("test.py", "--dataroot", dataset, "--weights", weights),
                      "--direction")


def test_results_inside_the_input_folder_are_refused(dataset, tmp_path):
    weights = save_generator(tmp_path / "g.pth")
    folder = os.path.join(dataset, "testA")
    result = run_script("test.py", "--input", folder, "--weights", weights,
                        "--results", os.path.join(folder, "r"))
    assert_user_error(result, "inside the input folder")


@pytest.fixture
def visdom_port(tmp_path):
    port = free_port()
    server = start_visdom_server(port, tmp_path / "visdom_env")
    yield port
    stop(server)


def test_visdom_gets_a_plot_per_loss_and_the_six_image_panel(dataset, tmp_path, visdom_port):
    import json
    import visdom
    args = [a for a in TINY if a != "--no_visdom"]
    result = run_script("train.py", "--dataroot", dataset, "--output", tmp_path / "myrun", *args,
                        "--n_epochs", "1", "--log_every", "2", "--sample_every", "3",
                        "--visdom_port", visdom_port)
    assert result.returncode == 0, result.stderr
    assert "warning" not in result.stderr
    windows = json.loads(visdom.Visdom(port=visdom_port, use_incoming_socket=False)
                         .get_window_data(env="myrun"))
    for name in ("loss_G", "loss_G_GAN", "loss_G_cycle", "loss_G_identity", "loss_D"):
        traces = windows[name]["content"]["data"]
        assert [t["name"] for t in traces] == [name, f"{name} (smoothed)"]
        assert traces[0]["x"] == traces[1]["x"] == [2, 4, 6]
    assert windows["lr"]["content"]["data"][0]["y"] == [2e-4] * 3  # a 1-epoch run at the full rate
    assert windows["images"]["type"] == "image"
    assert windows["images"]["title"] == "real_A | fake_B | rec_A | real_B | fake_A | rec_B"
    assert windows["options"]["type"] == "text"


@pytest.mark.parametrize("flags", [["--workers", "-1"], ["--ngf", "0"]])
def test_test_py_rejects_impossible_numbers(dataset, tmp_path, flags):
    result = run_script("test.py", "--input", os.path.join(dataset, "testA"), "--weights",
                        save_generator(tmp_path / "g.pth"), *flags)
    assert_user_error(result, flags[0])


def test_worker_processes_do_not_change_what_is_learned(dataset, tmp_path, single_thread):
    common = ["--dataroot", dataset, "--size", "32", "--ngf", "8", "--ndf", "8",
              "--n_blocks", "2", "--device", "cpu", "--no_visdom", "--n_epochs", "2",
              "--n_epochs_decay", "0"]
    assert run_script("train.py", *common, "--output", tmp_path / "w0",
                      "--workers", "0").returncode == 0
    assert run_script("train.py", *common, "--output", tmp_path / "w2",
                      "--workers", "2").returncode == 0
    assert_same_weights(tmp_path / "w0", tmp_path / "w2")


@pytest.mark.parametrize("out_of_memory", [
    torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"),
    RuntimeError("MPS backend out of memory (MPS allocated: 17.9 GB, other allocations: 1 MB)"),
], ids=["cuda", "mps"])
def test_a_photo_too_large_for_gpu_memory_is_translated_on_the_cpu_with_one_warning(
        monkeypatch, capsys, out_of_memory):
    test_py = load_script("test.py")
    from datasets import from_pixels, to_pixels
    from models import Generator, translate
    G = Generator(ngf=8, n_blocks=1).eval()

    def running_out_of_memory(net, images, memory, progress):
        if net is G and images.shape[-1] > 40:  # only the device's own copy runs out
            raise out_of_memory
        return translate(net, images), False

    monkeypatch.setattr(test_py, "translate_within", running_out_of_memory)
    settings = test_py.Settings(results="", device=torch.device("cpu"), amp=False,
                                precision="float32", batch_size=1, workers=0, side_by_side=False,
                                memory=None)
    translator = test_py.Translator(G, None, settings)
    small, large = (torch.randint(0, 256, (1, 3, *size), dtype=torch.uint8)
                    for size in ((32, 32), (48, 64)))
    with torch.inference_mode():
        for pixels, name in ((small, "small"), (large, "large")):
            expected = to_pixels(translate(G, from_pixels(pixels)))
            assert torch.equal(translator(pixels, [name])[0], expected)
    assert capsys.readouterr().err.strip() == (
        "warning: large (64x48) does not fit in cpu's memory; translated on the CPU")


@pytest.mark.parametrize("epoch,n_epochs,elapsed", [(0, 1, 17), (99, 200, 4000)])
def test_the_progress_bar_keeps_its_bar_counts_and_time_left_at_80_columns(epoch, n_epochs,
                                                                           elapsed):
    train_py = load_script("train.py")
    from tqdm import tqdm
    means = {"loss_G": 19.9081234, "loss_G_GAN": 3.3, "loss_G_cycle": 11.1, "loss_G_identity": 5.5,
             "loss_D": 3.1521}
    line = tqdm.format_meter(700, 1334, elapsed, ncols=80, prefix=f"epoch {epoch + 1}/{n_epochs}",
                             postfix=train_py.bar_losses(means, 0.02),
                             bar_format=train_py.BAR_FORMAT)
    assert len(line) <= 80, line
    assert re.search(r"\|[█▏▎▍▌▋▊▉ ]{8,}\|", line), line  # a bar of 8 characters or more
    assert "700/1334" in line and re.search(r"\d+:\d\d left", line), line  # counts and time left
    assert "G=19.9 D=3.15" in line and "data" not in line


def test_the_progress_bar_shows_the_time_waiting_for_data_where_it_holds_training_back():
    bar_losses = load_script("train.py").bar_losses
    means = {"loss_G": 19.9, "loss_D": 3.15}
    assert bar_losses(means, 0.123) == "G=19.9 D=3.15 data 12%"
    assert bar_losses(means, 0.05) == "G=19.9 D=3.15"


def test_sample_grids_label_each_image_and_enlarge_small_crops(tmp_path):
    from utils import VISUAL_NAMES, save_visuals
    shades = dict(zip(VISUAL_NAMES, (-1.0, -0.6, -0.2, 0.2, 0.6, 1.0)))
    save_visuals({name: torch.full((1, 3, 32, 48), shade) for name, shade in shades.items()},
                 tmp_path / "grid.png")
    sheet = np.asarray(Image.open(tmp_path / "grid.png").convert("L"), dtype=int)
    # 48x32 tiles enlarged 3 times, to 144x96
    assert sheet.shape == (2 * (16 + 96) + 3 * 2, 3 * 144 + 4 * 2)
    for i, name in enumerate(VISUAL_NAMES):
        x, y = 2 + (i % 3) * (144 + 2), 2 + (i // 3) * (16 + 96 + 2)
        label, tile = sheet[y:y + 16, x:x + 144], sheet[y + 16:y + 16 + 96, x:x + 144]
        assert (label < 128).sum() > 20, name  # dark text on the white band above the tile
        assert np.abs(tile - round((shades[name] * 0.5 + 0.5) * 255)).max() <= 1, name


def other_implementations_generator(ngf, n_blocks, block_name, affine):
    """A ResNet generator written as other CycleGAN code writes it (aitorzip/PyTorch-CycleGAN:
    residual blocks' layers in `conv_block`, InstanceNorm without weights; others, such as the
    one vintagify ships, name them `block` and give InstanceNorm affine weights)."""
    from torch import nn

    def norm(c):
        return nn.InstanceNorm2d(c, affine=affine)

    class Residual(nn.Module):
        def __init__(self, c):
            super().__init__()
            setattr(self, block_name,
                    nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c), nn.ReLU(True),
                                  nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3), norm(c)))

        def forward(self, x):
            return x + getattr(self, block_name)(x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            layers = [nn.ReflectionPad2d(3), nn.Conv2d(3, ngf, 7), norm(ngf), nn.ReLU(True)]
            for c in (ngf, 2 * ngf):
                layers += [nn.Conv2d(c, 2 * c, 3, stride=2, padding=1), norm(2 * c), nn.ReLU(True)]
            layers += [Residual(4 * ngf) for _ in range(n_blocks)]
            for c in (4 * ngf, 2 * ngf):
                layers += [nn.ConvTranspose2d(c, c // 2, 3, stride=2, padding=1, output_padding=1),
                           norm(c // 2), nn.ReLU(True)]
            layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, 3, 7), nn.Tanh()]
            self.model = nn.Sequential(*layers)

        def forward(self, x):
            return self.model(x)

    return Net().eval()


def test_a_generator_saved_by_aitorzips_pytorch_cyclegan_loads_unchanged_and_translates_alike(
        dataset, tmp_path):
    from models import Generator
    theirs = other_implementations_generator(8, 2, "conv_block", affine=False)
    torch.save(theirs.state_dict(), tmp_path / "netG_A2B.pth")
    result = run_script("test.py", "--input", os.path.join(dataset, "testA"),
                        "--weights", tmp_path / "netG_A2B.pth",
                        "--results", tmp_path / "res", "--workers", "0")
    assert result.returncode == 0, result.stderr
    ours = Generator(ngf=8, n_blocks=2).eval()
    ours.load_state_dict(theirs.state_dict(), strict=True)
    x = torch.rand(1, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(ours(x), theirs(x))


def test_a_generator_in_another_layout_says_how_it_differs(dataset, tmp_path):
    other = other_implementations_generator(8, 2, "block", affine=True)
    torch.save(other.state_dict(), tmp_path / "G_A2B_epoch33.pth")
    result = run_script("test.py", "--input", os.path.join(dataset, "testA"), "--weights",
                        tmp_path / "G_A2B_epoch33.pth", "--results", tmp_path / "res")
    assert_user_error(result,
                      "holds a generator in another layout (residual blocks under model.10.block; "
                      "InstanceNorm with affine weights (model.2.weight))",
                      "test.py reads the authors' layout")
    assert "--n_blocks 0" not in result.stderr


def test_scale_width_trains_on_non_square_images_of_two_sizes_and_draws_their_samples(tmp_path):
    data = make_dataset(tmp_path / "data", {"trainA": 2, "trainB": 2}, size=(64, 32))
    for i in range(2):  # domain B taller than wide
        write_image(os.path.join(data, "trainB", f"trainB_{i}.png"), size=(40, 60), seed=i)
    out = str(tmp_path / "run")
    result = train(data, out, "--preprocess", "scale_width", "--load_size", "48",
                   "--n_epochs", "1", "--sample_every", "1")
    assert result.returncode == 0, result.stderr
    samples = sorted(os.listdir(os.path.join(out, "samples")))
    assert samples and Image.open(os.path.join(out, "samples", samples[0])).size[0] >= 3 * 48


def test_a_preprocess_without_crops_needs_batch_size_1(dataset, tmp_path):
    result = train(dataset, str(tmp_path / "run"), "--preprocess", "none", "--batch_size", "2")
    assert_user_error(result, "--preprocess none", "--batch_size 1")


def test_crop_size_is_the_authors_name_for_size():
    args, _ = load_script("train.py").parse_args(["--dataroot", "d", "--crop_size", "128"])
    assert args.size == 128


def test_phase_and_max_dataset_size_choose_what_is_trained_on(tmp_path):
    data = make_dataset(tmp_path / "data", {"valA": 4, "valB": 3})
    out = str(tmp_path / "run")
    result = train(data, out, "--phase", "val", "--max_dataset_size", "2", "--n_epochs", "1")
    assert result.returncode == 0, result.stderr
    assert "2 A and 2 B images" in result.stdout


def test_test_py_phase_and_num_test_choose_what_is_translated(tmp_path):
    data = make_dataset(tmp_path / "data", {"valA": 3, "valB": 1})
    weights = tmp_path / "w"
    weights.mkdir()
    for name in ("netG_A2B.pth", "netG_B2A.pth"):
        save_generator(weights / name)
    result = run_script("test.py", "--dataroot", data, "--weights", weights, "--phase", "val",
                        "--num_test", "2", "--results", tmp_path / "results")
    assert result.returncode == 0, result.stderr
    assert len(os.listdir(tmp_path / "results" / "A2B")) == 2
    assert len(os.listdir(tmp_path / "results" / "B2A")) == 1
