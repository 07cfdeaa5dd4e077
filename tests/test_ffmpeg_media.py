import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from pipeline.core import ffmpeg
from pipeline.core.errors import FFmpegError, InputError
from pipeline.core.media import FrameSize, VideoReader, VideoWriter, decode_audio, read_first_frame
from pipeline.core.types import AudioClip
from tests.media_fixtures import make_tone, make_video, read_all_frames, stream_info


def test_paths_are_never_options_or_protocols(tmp_path: Path):
    weird = tmp_path / "-y.mp4"
    assert ffmpeg.file_arg(weird) == "file:" + str(weird.resolve())
    args = ffmpeg.decode_video_args(weird, 25)
    assert "-y.mp4" not in args and "file:" + str(weird.resolve()) in args
    assert ffmpeg.file_arg("a:b.mp4").startswith("file:/")


def test_decode_args_filter_chain_and_exact_trim():
    args = ffmpeg.decode_video_args("in.mp4", 25, start_frame=10, max_frames=5)
    chain = args[args.index("-vf") + 1]
    assert chain.startswith(
        "bwdif=mode=send_frame:deint=interlaced,crop=trunc(iw/2)*2:trunc(ih/2)*2:0:0,fps=25"
    )
    assert "trim=start_frame=10" in chain and chain.endswith("format=bgr24")
    assert args[args.index("-frames:v") + 1] == "5"
    assert args[-5:] == ["-f", "rawvideo", "-pix_fmt", "bgr24", "pipe:1"]


def test_encode_args_h264_aac_faststart_from_pipes():
    args = ffmpeg.encode_args("out.mp4", 320, 240, 25, 18, "medium", audio_fd=5)
    joined = " ".join(args)
    assert "-f rawvideo -pix_fmt bgr24 -s 320x240 -r 25 -i pipe:0" in joined
    assert "-f f32le -ar 16000 -ac 1 -i pipe:5" in joined
    assert "-c:v libx264 -preset medium -crf 18 -pix_fmt yuv420p" in joined
    assert "-c:a aac" in joined and "-movflags +faststart" in joined
    assert args[-1].startswith("file:/") and args[-2] == "mp4"


def test_parse_probe_distinguishes_streams_and_cover_art():
    banner = (
        "Input #0, mp3, from 'x.mp3':\n  Duration: 00:01:02.50, start: 0.0\n"
        "  Stream #0:0: Audio: mp3, 44100 Hz, stereo\n"
        "  Stream #0:1: Video: mjpeg (Baseline), yuvj420p, 500x500 (attached pic)\n"
    )
    info = ffmpeg.parse_probe(Path("x.mp3"), banner)
    assert info.has_audio and not info.has_video
    assert info.duration_s == pytest.approx(62.5)


def test_essential_stderr_picks_the_error_line():
    text = b"Input #0 ...\n[h264 @ 0x1] error while decoding MB 3 4\nsomething else\n"
    assert ffmpeg.essential_stderr(text) == "[h264 @ 0x1] error while decoding MB 3 4"


def test_probe_rejects_non_media_and_missing(tmp_path: Path):
    junk = tmp_path / "random.mp4"
    junk.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    with pytest.raises(InputError, match="not a media file"):
        ffmpeg.probe(junk, "video")
    with pytest.raises(InputError, match="video not found"):
        ffmpeg.probe(tmp_path / "nope.mp4", "video")
    with pytest.raises(InputError, match="is a directory"):
        ffmpeg.probe(tmp_path, "video")


def test_reader_streams_bounded_batches_and_trim_matches_full_decode(tmp_path: Path):
    clip = make_video(tmp_path / "c.mp4", seconds=2.0, fps=30, size="161x121")  # odd size, 30 fps
    first = read_first_frame(clip, 25)
    assert first.shape == (120, 160, 3)  # cropped to even
    size = FrameSize(160, 120)
    with VideoReader(clip, size, 25, 16) as reader:
        batches = list(reader)
    assert [len(b) for b in batches] == [16, 16, 16, 2]  # 2 s at 25 fps
    full = np.concatenate(batches)
    assert np.array_equal(full[0], first)
    with VideoReader(clip, size, 25, 16, start_frame=31, max_frames=9) as reader:
        part = np.concatenate(list(reader))
    assert np.array_equal(part, full[31:40])
    part[0, 0, 0] = 1  # batches are writable


def test_decode_audio_resamples_and_downmixes(tmp_path: Path):
    tone = make_tone(tmp_path / "t.wav", seconds=1.5, rate=48000, channels=2)
    clip = decode_audio(tone)
    assert clip.sample_rate_hz == 16000 and clip.samples.dtype == np.float32
    assert abs(len(clip.samples) - 24000) <= 2
    spectrum = np.abs(np.fft.rfft(clip.samples))
    assert abs(np.argmax(spectrum) * 16000 / len(clip.samples) - 440) < 2


def test_writer_muxes_audio_and_renames_only_on_commit(tmp_path: Path):
    frames = np.full((50, 64, 96, 3), 128, np.uint8)
    audio = AudioClip(np.sin(np.linspace(0, 2000, 32000)).astype(np.float32) * 0.5, 16000)
    out = tmp_path / "o.mp4"
    with VideoWriter(out, FrameSize(96, 64), 25, 18, "ultrafast", audio) as writer:
        writer.write(frames[:20])
        assert writer.temp_path.exists() or not out.exists()
        assert not out.exists()
        writer.write(frames[20:])
        writer.commit()
    assert out.exists() and not writer.temp_path.exists()
    info = stream_info(out)
    assert "Video: h264" in info and "yuv420p" in info and "Audio: aac" in info
    assert len(read_all_frames(out)) == 50
    assert decode_audio(out).duration_s == pytest.approx(2.0, abs=0.05)


def test_writer_abort_leaves_nothing(tmp_path: Path):
    out = tmp_path / "o.mp4"
    audio = AudioClip(np.zeros(16000, np.float32), 16000)
    with pytest.raises(RuntimeError):
        with VideoWriter(out, FrameSize(32, 32), 25, 18, "ultrafast", audio) as writer:
            writer.write(np.zeros((5, 32, 32, 3), np.uint8))
            raise RuntimeError("boom")
    assert not out.exists() and not writer.temp_path.exists()
    assert writer._process.poll() is not None
    assert os.listdir(tmp_path) == []


def test_writer_failure_carries_ffmpeg_message(tmp_path: Path):
    audio = AudioClip(np.zeros(1600, np.float32), 16000)
    with pytest.raises(FFmpegError, match="encoding"):
        with VideoWriter(tmp_path / "o.mp4", FrameSize(33, 33), 25, 18, "ultrafast", audio) as writer:
            writer.write(np.zeros((3, 33, 33, 3), np.uint8))  # odd size: libx264 refuses yuv420p
            writer.commit()
    assert list(tmp_path.iterdir()) == []
    assert subprocess.run([ffmpeg.ffmpeg_exe(), "-version"], capture_output=True).returncode == 0


def test_count_frames_matches_a_full_decode(tmp_path: Path):
    from pipeline.core.media import FrameCounter

    def count_frames(path, fps, max_frames=None):
        with FrameCounter(path, fps, max_frames) as counter:
            return counter.result()

    clip = make_video(tmp_path / "c.mp4", seconds=1.3, fps=30, audio=False)
    assert count_frames(clip, 25) == len(read_all_frames(clip)) == 33
    assert count_frames(clip, 25, max_frames=7) == 7


def test_frame_counter_counts_in_the_background_and_is_killed_when_left_early(tmp_path: Path):
    from pipeline.core.media import FrameCounter

    clip = make_video(tmp_path / "c.mp4", seconds=0.6, audio=False)
    with FrameCounter(clip, 25) as counter:
        assert counter.result() == 15
    with FrameCounter(tmp_path / "c.mp4", 25, max_frames=4) as counter:
        assert counter.result() == 4
    never = tmp_path / "never.mp4"
    os.mkfifo(never)  # no writer: ffmpeg waits on it until it is killed
    counter = FrameCounter(never, 25)
    process = counter._process
    assert process.poll() is None
    with pytest.raises(KeyboardInterrupt), counter:
        raise KeyboardInterrupt
    assert process.poll() is not None  # killed and reaped, not left decoding on its own
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"not a video")
    with pytest.raises(FFmpegError, match="decoding .*bad.mp4 failed"), FrameCounter(bad, 25) as failing:
        failing.result()


def test_images_are_recognised_by_demuxer_not_by_path_text():
    video_banner = "Input #0, mov,mp4,m4a,3gp,3g2,mj2, from '/data/lipsync_pipeline/image2_pipe.mp4':\n" + (
        "  Stream #0:0: Video: h264, yuv420p, 320x240, 25 fps\n"
    )
    assert not ffmpeg.parse_probe(Path("/data/lipsync_pipeline/image2_pipe.mp4"), video_banner).is_image
    image_banner = "Input #0, png_pipe, from 'photo.data':\n  Stream #0:0: Video: png, rgb24, 64x64\n"
    assert ffmpeg.parse_probe(Path("photo.data"), image_banner).is_image
    jpg_banner = "Input #0, image2, from 'face.JPG':\n  Stream #0:0: Video: mjpeg, yuvj420p, 64x64\n"
    assert ffmpeg.parse_probe(Path("face.JPG"), jpg_banner).is_image


def test_probe_of_a_video_under_a_pipeline_folder_is_not_a_still(tmp_path: Path):
    folder = tmp_path / "lipsync_pipeline"
    folder.mkdir()
    clip = make_video(folder / "water_pipe.mp4", seconds=0.3, audio=False)
    assert not ffmpeg.probe(clip, "video").is_image


def test_temporaries_of_killed_runs_are_removed_but_live_ones_kept(tmp_path: Path):
    from pipeline.core.media import remove_stale_partials

    dead = subprocess.Popen(["true"])
    dead.wait()
    out = tmp_path / "talk.mp4"
    stale = tmp_path / f".talk.partial-{dead.pid}.mp4"
    live = tmp_path / f".talk.partial-{os.getppid()}.mp4"
    other = tmp_path / f".other.partial-{dead.pid}.mp4"
    for path in (stale, live, other):
        path.write_bytes(b"x")
    remove_stale_partials(out)
    assert not stale.exists() and live.exists() and other.exists()
