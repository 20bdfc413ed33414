"""test.py on videos: tiny synthetic clips made here with PyAV, translated frame by frame."""
import os
import subprocess
import time
import sys
from fractions import Fraction

import numpy as np
import pytest
import torch

from conftest import ROOT, assert_user_error, load_script, run_script, write_image

av = pytest.importorskip("av")

# Each output frame is compared with the generator applied to the decoded input frame, in
# the colour resolution H.264 stores (4:2:0: half the width and height): x264 at CRF 18
# keeps the mean absolute difference under this many levels of 255. It measured 3 to 5 on
# the pixel noise a random generator makes, 1.5 on the smooth test pictures; a neighbouring
# frame's translation differs by 12 or more.
TOLERANCE = 8


def frame_pixels(i, width, height):
    """A smooth picture that changes from frame to frame: a gradient and a moving square."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([x * 255 // max(1, width - 1), y * 255 // max(1, height - 1),
                       np.full_like(x, (40 + 20 * i) % 256)], -1).astype(np.uint8)
    left = (6 * i) % max(1, width - 12)
    pixels[4:16, left:left + 12] = 255
    return pixels


def write_video(path, n=12, size=(64, 48), rate=24, codec="libx264", pix_fmt="yuv420p",
                audio=None, rotation=0, fmt=None):
    """A video of n frames of frame_pixels; audio: None or (codec, sample rate) for a 440 Hz
    tone."""
    width, height = size
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with av.open(str(path), "w", format=fmt) as out:
        video = out.add_stream(codec, rate=rate)
        video.width, video.height, video.pix_fmt = width, height, pix_fmt
        if rotation:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio[0], rate=audio[1]) if audio else None
        for i in range(n):
            out.mux(video.encode(av.VideoFrame.from_ndarray(frame_pixels(i, width, height),
                                                            format="rgb24")))
        out.mux(video.encode(None))
        if sound:
            write_tone(out, sound, Fraction(n, rate))
    return str(path)


def write_tone(out, stream, seconds):
    rate = stream.codec_context.sample_rate
    samples = (np.sin(2 * np.pi * 440 * np.arange(int(rate * seconds)) / rate)
               * 0.3).astype(np.float32)
    for start in range(0, len(samples), 1024):
        frame = av.AudioFrame.from_ndarray(samples[None, start:start + 1024], format="flt",
                                           layout="mono")
        frame.sample_rate = rate
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def decoded_frames(path):
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def translated(generator_file, pixels, pix_fmt="yuv420p"):
    """What the generator makes of one decoded frame, as uint8 pixels in the colour
    resolution of `pix_fmt`."""
    from models import Generator, translate
    G = Generator(ngf=8, n_blocks=1)
    G.load_state_dict(torch.load(generator_file, weights_only=True))
    image = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1).float() / 127.5 - 1
    fake = translate(G.eval(), image[None])[0]
    fake = ((fake + 1) * 127.5 + 0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return (av.VideoFrame.from_ndarray(fake, format="rgb24").reformat(format=pix_fmt)
            .to_ndarray(format="rgb24"))


def mean_difference(a, b):
    return np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()


def stream_facts(path):
    with av.open(str(path)) as container:
        video = container.streams.video[0]
        first = next(container.decode(video=0))
        return {"frames": video.frames, "rate": video.average_rate,
                "size": (first.width, first.height), "rotation": first.rotation,
                "audio": [a.codec_context.name for a in container.streams.audio],
                "codec": video.codec_context.name, "format": container.format.name}


def smooth_generator():
    """A generator whose filters all blur, channel c into channel c (the first layer also
    makes negated copies, which the ReLUs would otherwise drop): its output is a picture
    that depends on the input. A random generator's output is pixel noise, the first thing
    H.264 discards, which no frame-by-frame comparison could tell from a wrong frame."""
    from models import Generator
    G = Generator(ngf=8, n_blocks=1)
    blur = torch.outer(*[torch.tensor([1.0, 2.0, 1.0])] * 2) / 16
    upsample = torch.outer(*[torch.tensor([0.5, 1.0, 0.5])] * 2)
    with torch.no_grad():
        for m in G.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.zero_()
                m.bias.zero_()
                size = m.weight.shape[-1]
                kernel = (upsample if isinstance(m, torch.nn.ConvTranspose2d)
                          else torch.nn.functional.pad(blur, [(size - 3) // 2] * 4))
                for c in range(6 if size == 3 else 3):
                    m.weight[c, c] = kernel
        first, last = G.model[1], G.model[-2]
        first.weight[3:6] = -first.weight[0:3]
        last.weight[:, 3:6] = -last.weight[:, 0:3]
    return G


@pytest.fixture
def generator(tmp_path):
    path = str(tmp_path / "g.pth")
    torch.save(smooth_generator().state_dict(), path)
    return path


def translate_video(clip, generator, results, *flags):
    return run_script("test.py", "--input", clip, "--weights", generator, "--results", results,
                      "--device", "cpu", *flags)


def test_each_frame_of_the_video_is_translated_at_the_inputs_frame_count_rate_and_size(tmp_path,
                                                                                       generator):
    clip = write_video(tmp_path / "clip.mp4", n=20, rate=25)
    result = translate_video(clip, generator, tmp_path / "out", "--batch_size", "3")
    assert result.returncode == 0, result.stderr
    out = tmp_path / "out" / "A2B" / "clip.mp4"
    assert stream_facts(out)["frames"] == 20
    assert stream_facts(out)["rate"] == 25
    assert stream_facts(out)["size"] == (64, 48)
    inputs, outputs = decoded_frames(clip), decoded_frames(out)
    expected = [translated(generator, frame) for frame in inputs]
    errors = [mean_difference(o, e) for o, e in zip(outputs, expected)]
    assert max(errors) < TOLERANCE, errors
    # the frames stay in order: each is further from its neighbour's translation
    assert all(mean_difference(outputs[i], expected[i + 1]) > 2 * errors[i] for i in range(19))


def test_the_input_as_the_network_saw_it_goes_to_real_A(tmp_path, generator):
    clip = write_video(tmp_path / "clip.mp4")
    assert translate_video(clip, generator, tmp_path / "out").returncode == 0
    real = decoded_frames(tmp_path / "out" / "real_A" / "clip.mp4")
    assert len(real) == 12
    assert max(mean_difference(r, i) for r, i in zip(real, decoded_frames(clip))) < TOLERANCE


def test_a_b2a_video_reads_and_writes_the_b_folders(tmp_path, generator):
    clip = write_video(tmp_path / "clip.mp4", n=3)
    assert translate_video(clip, generator, tmp_path / "out", "--direction", "B2A").returncode == 0
    assert (sorted(os.listdir(tmp_path / "out"))
            == [".translated_with.json", "B2A", "index.html", "real_B"])
    assert os.listdir(tmp_path / "out" / "B2A") == ["clip.mp4"]


def test_aac_audio_is_copied_packet_for_packet(tmp_path, generator):
    clip = write_video(tmp_path / "clip.mp4", n=24, audio=("aac", 44100))
    assert translate_video(clip, generator, tmp_path / "out").returncode == 0

    def audio_packets(path):
        with av.open(str(path)) as container:
            return [bytes(p) for p in container.demux(audio=0) if p.size]

    assert audio_packets(tmp_path / "out" / "A2B" / "clip.mp4") == audio_packets(clip)
    assert audio_packets(tmp_path / "out" / "real_A" / "clip.mp4") == audio_packets(clip)


def test_pcm_audio_of_a_mov_becomes_aac_of_the_same_length(tmp_path, generator):
    clip = write_video(tmp_path / "clip.mov", n=24, audio=("pcm_s16le", 44100))
    assert translate_video(clip, generator, tmp_path / "out").returncode == 0
    out = tmp_path / "out" / "A2B" / "clip.mp4"
    assert stream_facts(out)["audio"] == ["aac"]
    with av.open(str(out)) as container:
        samples = sum(frame.samples for frame in container.decode(audio=0))
    assert abs(samples / 44100 - 1.0) < 0.05


def test_mp3_audio_is_copied_as_it_is(tmp_path, generator):
    clip = write_video(tmp_path / "clip.mp4", n=24, audio=("libmp3lame", 44100))
    assert translate_video(clip, generator, tmp_path / "out").returncode == 0
    assert (stream_facts(tmp_path / "out" / "A2B" / "clip.mp4")["audio"]
            == [stream_facts(clip)["audio"][0]])


def test_an_mkv_whose_last_frame_is_held_is_complete_not_truncated(tmp_path, generator):
    if int(av.__version__.split(".")[0]) < 18:
        # Its bundled FFmpeg drops the last block's duration when muxing; it reads a file that
        # holds one (written by PyAV 18) as it should.
        pytest.skip("writing this mkv needs PyAV 18, which needs Python 3.11")
    source = write_video(tmp_path / "source.mp4", n=10, rate=30)
    # 9 frames of 1/30 s, then 0.7 s: 1 s
    held = remux(source, tmp_path / "held.mkv", last_frame_seconds=0.7)
    result = translate_video(held, generator, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    assert len(decoded_frames(tmp_path / "out" / "A2B" / "held.mp4")) == 10


@pytest.mark.parametrize("container,codec,pix_fmt,audio", [
    ("webm", "libvpx-vp9", "yuv420p", ("libopus", 48000)),
    ("mkv", "libx264", "yuv420p", ("aac", 44100)),
    ("avi", "mjpeg", "yuvj420p", ("pcm_s16le", 44100)),
])
def test_webm_mkv_and_avi_inputs_become_mp4(tmp_path, generator, container, codec, pix_fmt, audio):
    clip = write_video(tmp_path / f"clip.{container}", n=10, codec=codec, pix_fmt=pix_fmt,
                       audio=audio)
    assert translate_video(clip, generator, tmp_path / "out").returncode == 0
    facts = stream_facts(tmp_path / "out" / "A2B" / "clip.mp4")
    assert "mp4" in facts["format"] and facts["codec"] == "h264"
    assert facts["frames"] == 10 and facts["size"] == (64, 48) and len(facts["audio"]) == 1


def test_a_phone_videos_rotation_is_applied_and_the_output_is_upright(tmp_path, generator):
    # Stored landscape with a white square at the top left; to be shown turned 90 degrees
    # counter-clockwise, which puts the square at the bottom left of a portrait picture.
    clip = write_video(tmp_path / "phone.mp4", n=4, rotation=90)
    assert translate_video(clip, generator, tmp_path / "out").returncode == 0
    real, fake = (tmp_path / "out" / folder / "phone.mp4" for folder in ("real_A", "A2B"))
    assert stream_facts(fake)["size"] == (48, 64) and stream_facts(fake)["rotation"] == 0
    first = decoded_frames(real)[0]
    assert first[-12:, 4:16].mean() > 240 and first[:12, 4:16].mean() < 200
    assert mean_difference(decoded_frames(fake)[0], translated(generator, first)) < TOLERANCE


def test_an_odd_size_comes_back_at_the_same_size(tmp_path, generator):
    clip = write_video(tmp_path / "odd.webm", n=6, size=(63, 47), codec="libvpx-vp9")
    assert translate_video(clip, generator, tmp_path / "out").returncode == 0
    out = tmp_path / "out" / "A2B" / "odd.mp4"
    assert stream_facts(out)["size"] == (63, 47)
    errors = [mean_difference(o, translated(generator, i, "yuv444p"))
              for o, i in zip(decoded_frames(out), decoded_frames(clip))]
    assert len(errors) == 6 and max(errors) < TOLERANCE


def test_side_by_side_puts_the_input_left_of_its_translation(tmp_path, generator):
    clip = write_video(tmp_path / "clip.mp4", n=6)
    assert translate_video(clip, generator, tmp_path / "out", "--side_by_side").returncode == 0
    frames, inputs = decoded_frames(tmp_path / "out" / "A2B" / "clip.mp4"), decoded_frames(clip)
    assert frames[0].shape == (48, 128, 3)
    for frame, source in zip(frames, inputs):
        assert mean_difference(frame[:, :64], source) < TOLERANCE
        assert mean_difference(frame[:, 64:], translated(generator, source)) < TOLERANCE


def test_a_folder_of_images_and_videos_translates_both_and_the_page_plays_the_videos(tmp_path,
                                                                                     generator):
    folder = tmp_path / "mine"
    write_image(str(folder / "photo.png"))
    write_video(folder / "clip.mp4", n=3)
    result = run_script("test.py", "--input", folder, "--weights", generator, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    results = tmp_path / "results_mine"
    assert sorted(os.listdir(results / "A2B")) == ["clip.mp4", "photo.png"]
    page = (results / "index.html").read_text()
    assert "<video controls preload='metadata' src='real_A/clip.mp4'></video>" in page
    assert "<video controls preload='metadata' src='A2B/clip.mp4'></video>" in page
    assert "<a href='#A2B'>A2B (1 image, 1 video)</a>" in page


VIDEO_STATES = ("return Array.from(document.querySelectorAll('video')).map(v => [\n"
                "    v.getAttribute('src'), v.readyState, v.duration, v.videoWidth, v.videoHeight,"
                " v.error && v.error.code])")


def test_the_results_page_plays_the_input_and_the_translation_in_a_browser(tmp_path, generator,
                                                                            browser):
    clip = write_video(tmp_path / "it's #1 at 50%.mp4", n=24, size=(128, 96), audio=("aac", 44100))
    assert translate_video(clip, generator, tmp_path / "out", "--side_by_side").returncode == 0
    browser.get((tmp_path / "out" / "index.html").as_uri())
    deadline = time.time() + 30
    while (any(state[1] < 1 for state in browser.execute_script(VIDEO_STATES))
           and time.time() < deadline):
        time.sleep(0.2)  # readyState 1: the browser has read the video's size and duration
    states = browser.execute_script(VIDEO_STATES)
    assert [(src, width, height, error) for src, _, _, width, height, error in states] == [
        ("real_A/it%27s%20%231%20at%2050%25.mp4", 128, 96, None),
        ("A2B/it%27s%20%231%20at%2050%25.mp4", 256, 96, None)]
    assert all(abs(duration - 1.0) < 0.1 for _, _, duration, *_ in states), states


def test_a_bad_video_in_a_folder_is_skipped_by_name_and_the_rest_translated(tmp_path, generator):
    folder = tmp_path / "mine"
    write_video(folder / "good.mp4", n=3)
    (folder / "broken.mp4").write_bytes(b"not a video" * 100)
    result = run_script("test.py", "--input", folder, "--weights", generator, "--device", "cpu")
    assert result.returncode == 0, result.stderr
    assert "skipped " + str(folder / "broken.mp4") + ": not a readable video" in result.stderr
    assert os.listdir(tmp_path / "results_mine" / "A2B") == ["good.mp4"]


def cut(path, fraction=0.6):
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[:int(len(data) * fraction)])
    return path


def remux(source, target, options=None, last_frame_seconds=None):
    """The video stream of `source` copied into `target` (its container from the name), with
    muxer `options`; `last_frame_seconds` sets how long the last frame is shown."""
    with av.open(str(source)) as inp, av.open(str(target), "w", options=options or {}) as out:
        stream = out.add_stream_from_template(inp.streams.video[0])
        packets = [p for p in inp.demux(video=0) if p.dts is not None]
        if last_frame_seconds:
            last = max(packets, key=lambda p: p.pts)
            last.duration = int(last_frame_seconds / last.time_base)
        for packet in packets:
            packet.stream = stream
            out.mux(packet)
    return str(target)


def remux_faststart(source, target):
    """The same video with its index at the front, as phones and web downloads have it."""
    return remux(source, target, {"movflags": "+faststart"})


def garbage(path):
    path.write_bytes(b"\x00junk" * 200)
    return str(path)


def audio_only(path):
    with av.open(str(path), "w") as out:
        write_tone(out, out.add_stream("aac", rate=44100), 1)
    return str(path)


def zero_frames(path):
    """An mkv with a video track that holds no frame (and some audio, so that it opens)."""
    with av.open(str(path), "w") as out:
        video = out.add_stream("libx264", rate=24)
        video.width, video.height, video.pix_fmt = 64, 48, "yuv420p"
        write_tone(out, out.add_stream("aac", rate=44100), 0.1)
    return str(path)


BAD_VIDEOS = {
    "garbage": (lambda d: garbage(d / "x.mp4"), "not a readable video"),
    "index at the end, cut": (lambda d: cut(write_video(d / "x.mp4", n=30)),
                              "not a readable video"),
    "index at the front, cut": (lambda d: cut(remux_faststart(write_video(d / "a.mp4", n=30),
                                                              d / "x.mp4")),
                                "truncated"),
    "mkv, cut": (lambda d: cut(write_video(d / "x.mkv", n=60)), "truncated"),
    "no video stream": (lambda d: audio_only(d / "x.mp4"), "no video stream"),
    "no frames": (lambda d: zero_frames(d / "x.mkv"), "no video frames"),
}


@pytest.mark.parametrize("kind", BAD_VIDEOS)
def test_a_bad_video_is_one_line_naming_it_and_leaves_no_output(tmp_path, generator, kind):
    make, words = BAD_VIDEOS[kind]
    clip = make(tmp_path)
    result = translate_video(clip, generator, tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    # Found before translating: one line. A cut-off mkv is found at its end, under its progress bar.
    *bar, error = result.stderr.strip().splitlines()
    assert error.startswith(f"test.py: error: {clip}: {words}"), error
    assert (all(line.startswith("A2B x.mkv") for line in bar)
            and (not bar or kind == "mkv, cut")), bar
    assert not [f for _, _, files in os.walk(tmp_path / "out") for f in files]


def test_ffmpeg_refusing_to_write_is_one_line_naming_the_video_and_leaves_no_output(tmp_path,
                                                                                    generator,
                                                                                    monkeypatch):
    import video

    def refused(self, image, time_stamp):
        raise av.error.ArgumentError(22, "Invalid argument")

    monkeypatch.setattr(video.VideoWriter, "write", refused)
    clip = write_video(tmp_path / "clip.mp4", n=3)
    result = translate_video(clip, generator, tmp_path / "out")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1] == (
        f"test.py: error: {clip}: cannot write its translation (Invalid argument)")
    assert not (tmp_path / "out").exists()


def test_interrupting_a_video_leaves_no_partial_file(tmp_path, generator, monkeypatch):
    test_py, calls = load_script("test.py"), []

    def interrupted_on_the_third_batch(G, images, memory, progress):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return torch.zeros_like(images), False

    monkeypatch.setattr(test_py, "translate_within", interrupted_on_the_third_batch)
    clip = write_video(tmp_path / "clip.mp4", n=12, audio=("aac", 44100))
    result = translate_video(clip, generator, tmp_path / "out")
    assert (result.returncode == 130
            and "test.py: interrupted; nothing was translated" in result.stderr)
    assert len(calls) == 3
    assert not (tmp_path / "out").exists()  # nor the folders made for it


def test_interrupting_a_folder_keeps_what_was_finished_and_its_page(tmp_path, generator,
                                                                    monkeypatch):
    test_py = load_script("test.py")
    real_translate = test_py.translate_within

    def interrupted_on_a_video_frame(G, images, memory, progress):
        if images.shape[-2:] == (48, 64):  # the video's frames; the photo is 40x40
            raise KeyboardInterrupt
        return real_translate(G, images, memory, progress)

    monkeypatch.setattr(test_py, "translate_within", interrupted_on_a_video_frame)
    folder = tmp_path / "mine"
    write_image(str(folder / "photo.png"))
    write_video(folder / "clip.mp4", n=4)
    result = run_script("test.py", "--input", folder, "--weights", generator, "--device", "cpu",
                        "--workers", "0")
    assert result.returncode == 130
    assert f"the files translated so far (1) are in {tmp_path / 'results_mine'}" in result.stderr
    assert os.listdir(tmp_path / "results_mine" / "A2B") == ["photo.png"]
    assert "src='A2B/photo.png'" in (tmp_path / "results_mine" / "index.html").read_text()


def test_sigterm_mid_video_exits_143_and_leaves_no_partial_file(tmp_path, generator):
    clip = write_video(tmp_path / "long.mp4", n=400, size=(256, 256))
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "test.py"), "--input", clip,
                                "--weights", generator, "--results", str(out), "--device", "cpu"],
                               stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while (not (out / "A2B" / "long.mp4.part").exists() and time.time() < deadline
           and process.poll() is None):
        time.sleep(0.05)
    process.terminate()
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 143, stderr
    assert "test.py: interrupted; nothing was translated" in stderr
    assert not out.exists()


def test_without_pyav_a_video_is_one_line_saying_what_to_install_and_images_still_work(tmp_path,
                                                                                       generator):
    clip = write_video(tmp_path / "clip.mp4", n=2)
    folder = tmp_path / "mine"
    write_image(str(folder / "photo.png"))
    os.link(clip, folder / "clip.mp4")
    hide_av = tmp_path / "no_av"
    hide_av.mkdir()
    (hide_av / "av.py").write_text("raise ImportError('hidden by the test')\n")
    env = {**os.environ, "PYTHONPATH": str(hide_av)}

    def run(source):
        return subprocess.run([sys.executable, os.path.join(ROOT, "test.py"), "--input",
                               str(source), "--weights", generator, "--device", "cpu",
                               "--workers", "0"], capture_output=True, text=True, env=env)

    assert_user_error(run(clip), f"{clip}: translating videos needs PyAV: pip install av")
    result = run(folder)
    assert result.returncode == 0, result.stderr
    assert (f"skipped {folder / 'clip.mp4'}: translating videos needs PyAV: pip install av"
            in result.stderr)
    assert os.listdir(tmp_path / "results_mine" / "A2B") == ["photo.png"]


def peak_memory_mib(clip, generator, results):
    """The peak resident memory of a test.py process translating `clip`."""
    code = ("import os, resource, runpy, sys; sys.argv = sys.argv[1:]; "
            "sys.path.insert(0, os.path.dirname(sys.argv[0]))\n"
            "try:\n    runpy.run_path(sys.argv[0], run_name='__main__')\n"
            "finally:\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024, "
            "file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, os.path.join(ROOT, "test.py"),
                           "--input", str(clip), "--weights", generator, "--results", str(results),
                           "--device", "cpu", "--batch_size", "4"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return int(done.stderr.strip().splitlines()[-1])


def test_memory_stays_flat_however_long_the_video(tmp_path, generator):
    # 300 more frames of 256x256 are 56 MiB even as decoded 8-bit pixels: a decoder running
    # ahead unbounded measured 82 MiB more here; streaming measured 2.
    short = write_video(tmp_path / "short.mp4", n=100, size=(256, 256))
    long = write_video(tmp_path / "long.mp4", n=400, size=(256, 256))
    growth = (peak_memory_mib(long, generator, tmp_path / "b")
              - peak_memory_mib(short, generator, tmp_path / "a"))
    assert growth < 25, f"{growth} MiB more for 4 times the frames"


def test_decoding_ahead_stops_within_its_depth_when_the_loop_ends_early():
    from video import in_background
    produced = []

    def frames():
        for i in range(1000):
            produced.append(i)
            yield i

    ahead = in_background(frames(), 2)
    assert next(ahead) == 0
    ahead.close()  # returns once the thread has ended
    count = len(produced)
    assert count <= 4  # the one taken, two queued, one waiting for room
    time.sleep(0.3)
    assert len(produced) == count


def test_an_error_while_decoding_ahead_is_raised_in_the_loop():
    from video import VideoError, in_background

    def frames():
        yield 1
        raise VideoError("cannot decode frame 2")

    ahead = in_background(frames(), 2)
    assert next(ahead) == 1
    with pytest.raises(VideoError, match="frame 2"):
        next(ahead)
