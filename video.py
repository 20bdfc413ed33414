"""Videos, translated frame by frame for test.py (and timed by benchmark.py), with PyAV
(FFmpeg's libraries).

Frames come out upright (a phone stores a video turned, with a rotation for the player to
apply) as 3xHxW uint8 tensors with their time stamps, go through the generator in batches
while a thread decodes ahead and another encodes behind, and go back as H.264 in an mp4
with the input's timing, frame rate and audio. Nothing holds more than a few frames,
whatever the length of the video.
"""
import contextlib
import os
import queue
import threading
from fractions import Fraction

import torch

from utils import Behind, describe, same_size_batches

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".webm", ".mkv", ".avi")
INSTALL = "translating videos needs PyAV: pip install av"
# Audio an mp4 holds as it is; other audio (the PCM of .mov and .avi, Vorbis) becomes AAC.
MP4_AUDIO = {"aac", "mp3", "ac3", "eac3", "opus", "flac", "alac"}
CRF = "18"  # x264's quality for "visually lossless"; its default, 23, blurs fine texture


class VideoError(Exception):
    """A video that cannot be translated; the message says why, without the file's name."""


def is_video(path):
    return path.lower().endswith(VIDEO_EXTENSIONS)


def import_av():
    try:
        import av
    except ImportError:
        raise VideoError(INSTALL)
    return av


def translate_frames(video, generate, real_path, fake_path, batch_size, *, side_by_side=False,
                     pin=False, progress=None):
    """Write each frame of `video` (a VideoReader) through `generate` (a batch of uint8 frames
    to their translations, uint8 on the CPU) to fake_path, and the frames as they went in to
    real_path; with side_by_side, fake_path shows each input left of its translation. With
    `pin`, batches are stacked in page-locked memory (for a CUDA GPU). `progress` is called
    with the number of frames of each batch done."""
    width = 2 * video.width if side_by_side else video.width
    decoded = in_background(video.frames(), 2 * batch_size)
    # closing(decoded) stops the decoding thread on any way out, before the caller closes the
    # file. The encoder may fall two batches behind, no more, rather than hold more frames.
    try:
        with (contextlib.closing(decoded),
              VideoWriter(real_path, video, video.width, video.height) as real,
              VideoWriter(fake_path, video, width, video.height) as fake,
              Behind(threads=1, limit=2) as encoder):
            for frames, stamps in same_size_batches(decoded, batch_size, pin):
                fakes = generate(frames)
                if side_by_side:
                    fakes = torch.cat([frames, fakes], -1)
                encoder.submit(_encode, real, fake, frames, fakes, stamps)
                if progress:
                    progress(len(stamps))
    except video.error as e:  # FFmpeg refusing to encode or mux, say this file's audio
        raise VideoError(f"cannot write its translation ({_reason(e)})")


def _encode(real, fake, frames, fakes, stamps):
    for frame, translated, stamp in zip(frames, fakes, stamps):
        real.write(frame, stamp)
        fake.write(translated, stamp)


def in_background(items, depth):
    """Iterate `items` in a thread, at most `depth` items ahead, and raise its errors here.
    Closing the iterator stops the thread and waits for it."""
    ready, stop = queue.Queue(depth), threading.Event()

    def offer(entry):
        while not stop.is_set():
            try:
                ready.put(entry, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        try:
            for item in items:
                if not offer((item, None)):
                    return
            offer((None, StopIteration()))
        except BaseException as e:
            offer((None, e))

    thread = threading.Thread(target=produce, daemon=True)
    thread.start()
    try:
        while True:
            item, error = ready.get()
            if isinstance(error, StopIteration):
                return
            if error is not None:
                raise error
            yield item
    finally:
        stop.set()
        thread.join()


def check_video(path):
    """Why `path` cannot be translated, or None: opens it and decodes its first frame."""
    try:
        VideoReader(path).close()
    except VideoError as e:
        return str(e)
    return None


class VideoReader:
    """The first video stream of a file, its first frame decoded: `width` and `height` are
    its upright size. Refuses, with a VideoError, a file FFmpeg cannot open, one without a
    video stream or frames, and one whose index points past its end (cut off)."""

    def __init__(self, path):
        av = import_av()
        self.path, self.error = path, av.FFmpegError
        try:
            self.container = av.open(path)
        except self.error as e:
            raise VideoError(f"not a readable video ({_reason(e)})")
        try:
            self._open_stream()
        except BaseException:
            self.close()
            raise

    def _open_stream(self):
        if not self.container.streams.video:
            raise VideoError("no video stream")
        self.stream = self.container.streams.video[0]
        self.stream.thread_type = "AUTO"  # decode on all cores
        entries = self.stream.index_entries
        if len(entries) and entries[-1].pos + entries[-1].size > os.path.getsize(self.path):
            raise VideoError("truncated (its index lists frames past the end of the file)")
        self.time_base = self.stream.time_base or Fraction(1, 90000)
        # The guessed rate, as FFmpeg's own tools use: a variable-rate mkv's average rate can be
        # its time base (1000/s).
        self.rate = self.stream.guessed_rate or self.stream.average_rate or Fraction(30)
        self.seconds = _stated_seconds(self.stream, self.time_base)
        self.decoded = self.container.decode(self.stream)
        self.count, self.last, self.last_duration = 0, None, None
        self.first = self._next()
        if self.first is None:
            raise VideoError("no video frames")
        self.height, self.width = self.first[0].shape[-2:]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self.container.close()

    def frame_count(self):
        """The number of frames the file says it holds, or an estimate from its duration; None
        when it says neither."""
        if self.stream.frames:
            return self.stream.frames
        return round(self.seconds * self.rate) if self.seconds else None

    def frames(self):
        """(upright 3xHxW uint8 tensor, time stamp in time_base) per frame, in display order,
        once. A decoding error, or fewer frames than the file lists, raise a VideoError."""
        frame = self.first
        while frame is not None:
            yield frame
            frame = self._next()
        self._check_complete()

    def _check_complete(self):
        """A file cut off in a container without an index (mkv, webm) decodes without an
        error: only its stated frame count or duration tells."""
        if self.count < self.stream.frames:
            raise VideoError(f"truncated (only {self.count} of its {self.stream.frames} frames "
                             "could be read)")
        shown = self.last_duration * self.time_base if self.last_duration else 1 / self.rate
        end = (self.last - (self.stream.start_time or 0)) * self.time_base + shown
        if self.seconds and end < self.seconds - max(2 / self.rate, self.seconds / 50):
            raise VideoError(f"truncated (its frames end at {float(end):.2f} s of its "
                             f"{float(self.seconds):.2f} s)")

    def _next(self):
        try:
            frame = next(self.decoded, None)
        except self.error as e:
            raise VideoError(f"cannot decode frame {self.count + 1} ({_reason(e)})")
        if frame is None:
            return None
        self.last = _time_stamp(frame, self.last, self.time_base, self.rate)
        self.last_duration = getattr(frame, "duration", None)
        self.count += 1
        return upright(frame), self.last


def _stated_seconds(stream, time_base):
    """The video stream's duration as the file states it (mp4: in the stream; mkv and webm:
    in a DURATION tag), or None."""
    if stream.duration:
        return stream.duration * time_base
    try:
        hours, minutes, seconds = stream.metadata.get("DURATION", "").split(":")
        return (int(hours) * 60 + int(minutes)) * 60 + Fraction(seconds)
    except ValueError:
        return None


def _time_stamp(frame, last, time_base, rate):
    """The frame's time stamp; where the file gives none, or one not after the last (which
    the encoder refuses), one frame duration after the last."""
    if last is None:
        return frame.pts or 0
    step = max(1, round(1 / (rate * time_base)))
    return frame.pts if frame.pts is not None and frame.pts > last else last + step


def upright(frame):
    """A decoded frame as a 3xHxW uint8 RGB tensor, turned as its rotation metadata says."""
    image = torch.from_numpy(frame.to_ndarray(format="rgb24")).permute(2, 0, 1)
    return torch.rot90(image, round(frame.rotation / 90), (1, 2))  # rotation is counter-clockwise


class VideoWriter:
    """An H.264 mp4 of width x height frames, timed and paced as `source` (a VideoReader),
    with its audio. Written under path + '.part', renamed to path when the `with` block
    ends normally and removed when it ends with an exception: a video under its final name
    is always complete."""

    def __init__(self, path, source, width, height):
        av = import_av()
        self.path, self.part = path, path + ".part"
        self.time_base, self.frame_type = source.time_base, av.VideoFrame
        self.output = av.open(self.part, "w", format="mp4", options={"movflags": "+faststart"})
        self.video = self.output.add_stream("libx264", rate=source.rate, options={"crf": CRF})
        self.video.width, self.video.height = width, height
        # 4:2:0, which every player plays, needs even sizes; an odd size is kept exactly in
        # 4:4:4 (H.264 High 4:4:4), which FFmpeg-based players and Chromium play, and which
        # many hardware decoders (phones, Safari) do not.
        self.video.pix_fmt = "yuv420p" if width % 2 == 0 and height % 2 == 0 else "yuv444p"
        self.video.codec_context.time_base = source.time_base
        self.audio = AudioCopy(source.path, self.output) if source.container.streams.audio else None

    def __enter__(self):
        return self

    def write(self, image, time_stamp):
        """Encode one 3xHxW uint8 tensor, and the audio up to its time."""
        pixels = image.permute(1, 2, 0).contiguous().numpy()
        frame = self.frame_type.from_ndarray(pixels, format="rgb24")
        frame.pts, frame.time_base = time_stamp, self.time_base
        self.output.mux(self.video.encode(frame))
        if self.audio:
            self.audio.copy_until(time_stamp * self.time_base)

    def __exit__(self, kind, error, traceback):
        try:
            if kind is None:
                self.output.mux(self.video.encode(None))
                if self.audio:
                    self.audio.copy_until(None)
        finally:
            if self.audio:
                self.audio.close()
            self.output.close()
        if kind is None:
            os.replace(self.part, self.path)
        elif os.path.exists(self.part):  # FFmpeg creates it with the first frame
            os.remove(self.part)


class AudioCopy:
    """The first audio stream of the file at `path`, added to `output` as it is where an mp4
    can hold it, else as AAC; copied in step with the video, so that the two interleave."""

    def __init__(self, path, output):
        av = import_av()
        self.input = av.open(path)
        stream = self.input.streams.audio[0]
        # canonical_name, since .name says "mp3float"
        self.transcode = stream.codec_context.codec.canonical_name not in MP4_AUDIO
        if self.transcode:
            # An .avi's audio comes as "2 channels", which the AAC encoder refuses: stereo.
            layout = {1: "mono", 2: "stereo"}.get(len(stream.layout.channels), stream.layout)
            self.stream = output.add_stream("aac", rate=stream.rate, layout=layout)
        else:
            self.stream = output.add_stream_from_template(stream)
        self.output, self.packets, self.next = output, self.input.demux(stream), None

    def copy_until(self, seconds):
        """Copy the packets that start before `seconds` (all the rest for None)."""
        for packet in self._packets_until(seconds):
            if self.transcode:
                for frame in packet.decode():
                    self.output.mux(self.stream.encode(frame))
            elif packet.dts is not None:  # not the demuxer's empty packet at the end
                packet.stream = self.stream
                self.output.mux(packet)
        if seconds is None and self.transcode:
            self.output.mux(self.stream.encode(None))

    def _packets_until(self, seconds):
        while True:
            packet = self.next or next(self.packets, None)
            self.next = None
            if packet is None:
                return
            stamp = packet.pts or packet.dts
            if (seconds is not None and packet.dts is not None
                    and stamp * packet.time_base >= seconds):
                self.next = packet
                return
            yield packet

    def close(self):
        self.input.close()


def _reason(error):
    """FFmpeg's reason without the error number and file name PyAV adds to it."""
    return getattr(error, "strerror", None) or describe(error)
