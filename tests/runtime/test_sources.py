"""Frame sources: video files written here with OpenCV, the synthetic scene, image folders,
the registry, fps sampling, reconnecting a live source, redaction."""

from __future__ import annotations

import threading
import time

import cv2  # the video extra: CI installs it (tools/install.sh)
import numpy as np
import pytest

from edgekv.runtime.sources import SourceError, open_source
from edgekv.runtime.sources.frames import FrameStream, StreamLimits
from edgekv.runtime.sources.image_folder import ImageFolderSource
from edgekv.runtime.sources.rate import RateSampler
from edgekv.runtime.sources.reconnect import Backoff
from edgekv.runtime.sources.redact import redact
from edgekv.runtime.sources.synthetic import SyntheticSource
from edgekv.runtime.sources.video_file import VideoFileSource
from stream_fakes import FlakyCamera

FAST = Backoff(initial_s=0.01, max_s=0.02)
COLOURS_RGB = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]


def write_video(path, frames: int, fps: float = 10.0, size=(64, 48)):
    """frames of solid colours cycling red, green, blue (written BGR, as OpenCV wants)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        rgb = np.zeros((size[1], size[0], 3), np.uint8)
        rgb[:] = COLOURS_RGB[i % 3]
        writer.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    writer.release()
    return path


def messages():
    said: list[str] = []
    return said, said.append


def test_video_file_gives_rgb_frames_in_order_with_media_time_and_ends(tmp_path):
    source = open_source(str(write_video(tmp_path / "clip.avi", 12)))
    assert isinstance(source, VideoFileSource) and not source.live
    frames = list(FrameStream(source))
    assert len(frames) == 12
    assert [f.index for f in frames] == list(range(12))
    for i, frame in enumerate(frames):
        assert frame.image.shape == (48, 64, 3) and frame.image.dtype == np.uint8
        dominant = int(np.argmax(frame.image.reshape(-1, 3).mean(0)))
        assert dominant == i % 3, "frames must come out RGB, in order"
    times = [f.t for f in frames]
    assert times == sorted(times) and times[-1] == pytest.approx(1.1, abs=0.02)


def test_a_corrupt_frame_inside_a_video_is_skipped_with_a_warning(tmp_path):
    data = bytearray(write_video(tmp_path / "clip.avi", 10).read_bytes())
    jpegs = [i for i in range(len(data) - 1) if data[i : i + 2] == b"\xff\xd8"]
    assert len(jpegs) == 10  # MJPG: one JPEG per frame
    data[jpegs[4] : jpegs[4] + 200] = bytes(200)  # wipe the fifth frame's header
    (tmp_path / "bad.avi").write_bytes(bytes(data))
    said, say = messages()
    stream = FrameStream(open_source(str(tmp_path / "bad.avi")), say=say)
    frames = list(stream)
    assert [f.index for f in frames] == [0, 1, 2, 3, 5, 6, 7, 8, 9]
    assert [int(np.argmax(f.image[0, 0])) for f in frames] == [i % 3 for i in
                                                                 (0, 1, 2, 3, 5, 6, 7, 8, 9)]
    assert stream.counters.skipped == 1 and stream.end_reason == "source ended"
    assert len(said) == 1 and "frame 4 could not be decoded" in said[0]


def test_fps_samples_a_video_by_media_time(tmp_path):
    video = write_video(tmp_path / "clip.avi", 30, fps=30.0)
    stream = FrameStream(open_source(str(video)), StreamLimits(fps=10.0))
    frames = list(stream)
    assert [f.index for f in frames] == list(range(0, 30, 3))
    assert stream.counters.dropped_rate == 20 and stream.end_reason == "source ended"


def test_max_frames_and_duration_end_the_stream(tmp_path):
    stream = FrameStream(open_source("synthetic:size=16x16"), StreamLimits(max_frames=7))
    assert len(list(stream)) == 7 and stream.end_reason == "--max-frames"
    stream = FrameStream(open_source("synthetic:size=16x16,fps=30"),
                         StreamLimits(duration_s=2.0))
    assert len(list(stream)) == 60 and stream.end_reason == "--duration"


def test_synthetic_is_seeded_moving_and_numbered():
    a = [f.image for f in FrameStream(open_source("synthetic:seed=3,size=80x60,frames=5"))]
    b = [f.image for f in FrameStream(open_source("synthetic:seed=3,size=80x60,frames=5"))]
    c = [f.image for f in FrameStream(open_source("synthetic:seed=4,size=80x60,frames=5"))]
    assert len(a) == 5 and a[0].shape == (60, 80, 3)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], a[1])  # shapes move and the counter changes
    counter = (slice(0, 12), slice(0, 30))  # the seven-segment counter, top left
    assert not np.array_equal(a[1][counter], a[2][counter])


def test_synthetic_rejects_unknown_keys():
    with pytest.raises(SourceError, match="unknown key"):
        open_source("synthetic:colour=red")


def write_image(path, rgb):
    ok, data = cv2.imencode(path.suffix, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    assert ok
    path.write_bytes(data.tobytes())


def test_image_folder_in_natural_order_skips_a_corrupt_image_with_a_warning(tmp_path):
    for i in (1, 2, 10):  # natural order: 1, 2, 10 (not 1, 10, 2)
        rgb = np.full((20, 30, 3), i * 20, np.uint8)
        write_image(tmp_path / f"frame{i}.png", rgb)
    (tmp_path / "frame5.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "notes.txt").write_text("not an image")
    said, say = messages()
    stream = FrameStream(open_source(str(tmp_path)), say=say)
    assert isinstance(stream.source, ImageFolderSource)
    frames = list(stream)
    assert [int(f.image[0, 0, 0]) for f in frames] == [20, 40, 200]
    assert stream.counters.skipped == 1
    assert len(said) == 1 and "frame5.jpg" in said[0] and "corrupt" in said[0]


def test_an_empty_folder_and_a_missing_path_are_errors(tmp_path):
    with pytest.raises(SourceError, match="no images"):
        list(FrameStream(open_source(str(tmp_path))))
    with pytest.raises(SourceError, match="missing.mp4: no such file or folder"):
        open_source(str(tmp_path / "missing.mp4"))
    with pytest.raises(SourceError, match="not a known source"):
        open_source("webcam-please")


def test_a_camera_that_is_not_there_fails_when_opened_not_after_the_model_loads(tmp_path):
    from edgekv.runtime.sources.camera import open_camera

    (tmp_path / "video2").touch()
    assert open_camera("2", dev=tmp_path).name == "camera:2"
    with pytest.raises(SourceError, match=r"camera:7: there is no .*video7 \(cameras here: video2"):
        open_camera("7", dev=tmp_path)


def test_registry_dispatch_and_env_spec(monkeypatch):
    with pytest.raises(SourceError, match="camera:99: there is no /dev/video99"):
        open_source("camera:99")  # the camera source, which found no such device
    assert open_source("synthetic").name == "synthetic"
    monkeypatch.setenv("CAM_URL", "rtsp://admin:hunter2@10.0.0.5:554/live")
    source = open_source("env:CAM_URL")
    assert source.live and source.name == "rtsp://***@10.0.0.5:554/live"
    assert "hunter2" not in repr(source)
    with pytest.raises(SourceError, match="appsink"):
        open_source("gst:videotestsrc")
    with pytest.raises(SourceError, match="not set"):
        open_source("env:EDGEKV_NO_SUCH_VARIABLE")


def test_redact_hides_userinfo_even_with_at_signs():
    assert redact("rtsp://u:p@ss@host:554/a?x=1") == "rtsp://***@host:554/a?x=1"
    assert redact("open rtsp://cam/a and rtsps://me:pw@h/b") == \
        "open rtsp://cam/a and rtsps://***@h/b"


def test_rtsp_that_cannot_connect_fails_without_showing_the_password():
    source = open_source("rtsp://admin:s3cret@127.0.0.1:1/stream")  # nothing listens on port 1
    with pytest.raises(SourceError) as caught:
        list(FrameStream(source, backoff=FAST))
    assert "s3cret" not in str(caught.value) and "***@127.0.0.1:1" in str(caught.value)


def test_rate_sampler_keeps_f_per_second_and_restarts_after_a_gap():
    rate = RateSampler(10.0)
    kept = [i for i in range(30) if rate.take(i / 30)]
    assert kept == list(range(0, 30, 3))
    rate = RateSampler(10.0)
    assert rate.take(0.0) and rate.take(5.0)  # a 5 s gap: the next frame is kept...
    assert not rate.take(5.05) and rate.take(5.1)  # ...and the rate resumes from there


def test_a_camera_that_fails_on_frame_k_is_reopened_and_the_stream_continues():
    camera = FlakyCamera(fail_at=5, refuse=2, name="rtsp://op:pa55@cam.local/live")
    said, say = messages()
    stream = FrameStream(camera, StreamLimits(max_frames=12), say=say, backoff=FAST)
    frames = list(stream)
    assert len(frames) == 12  # the failure cost no frame the run asked for
    assert camera.opens == 4  # the first, two refused while unplugged, the one that worked
    assert stream.counters.reconnects == 1
    indices = [f.index for f in frames]
    assert indices == sorted(indices) and len(set(indices)) == 12  # one counter across opens
    assert any("dropped" in m and "RuntimeError" in m for m in said)
    assert any("reopened" in m for m in said)
    assert not any("pa55" in m for m in said)


def test_reconnecting_gives_up_after_max_attempts():
    camera = FlakyCamera(fail_at=2, refuse=100)
    with pytest.raises(SourceError, match="did not come back after 3 attempts"):
        list(FrameStream(camera, backoff=Backoff(0.001, max_s=0.001, max_attempts=3),
                         say=lambda _m: None))


def test_a_live_source_drops_frames_while_the_consumer_is_busy():
    source = open_source("synthetic:size=16x16,fps=200,live=1")  # paced like a camera
    assert isinstance(source, SyntheticSource) and source.live
    stream = FrameStream(source, StreamLimits(max_frames=5))
    start = time.monotonic()
    taken = []
    for frame in stream:
        taken.append(frame.index)
        time.sleep(0.05)  # the model is busy for 10 frame periods
    assert len(taken) == 5
    assert stream.counters.dropped_busy >= 10
    assert taken[-1] - taken[0] >= 15  # each frame taken is the newest, not the next queued
    assert time.monotonic() - start < 5


def test_stop_event_ends_a_live_stream_promptly():
    stop = threading.Event()
    stream = FrameStream(open_source("synthetic:size=16x16,fps=50,live=1"), stop=stop)
    count = 0
    for _ in stream:
        count += 1
        if count == 3:
            stop.set()
    assert count == 3 and stream.end_reason == "stopped"
