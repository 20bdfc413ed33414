"""The results page, index.html: per direction, each input beside its translation and
reconstruction, with the counts of images and videos, in relative links so that the folder can
be zipped and shared; a file name that is not UTF-8 keeps its bytes in the link.
"""
import html
import os
import urllib.parse

from utils import DIRECTIONS
from video import is_video

STYLE = ("body{font-family:sans-serif} table{width:100%;table-layout:fixed} "
         "td{padding:4px;vertical-align:top;text-align:center} img,video{width:100%;display:block}")


def write_index(results, translated, reconstructed, made_by):
    """index.html: which weights made it, a link to each direction, then each input beside its
    translation and, where the generator for the way back was there, its reconstruction
    (images only); file names as captions, images and videos as wide as the page allows,
    loaded as they scroll into view. `translated`: the file names written, per direction."""
    links = " | ".join(f"<a href='#{d}'>{d} ({_count(files)})</a>"
                       for d, files in translated.items())
    parts = ["<!doctype html><meta charset='utf-8'><title>CycleGAN results</title>",
             f"<style>{STYLE}</style>",
             f"<p>Translated by {html.escape(shown(made_by))}</p>",
             f"<p>{links}</p>"]
    for direction, files in translated.items():
        domain = DIRECTIONS[direction].source
        columns = [("input", f"real_{domain}"), (direction, direction)]
        columns += [("reconstruction", f"rec_{domain}")] if reconstructed[direction] else []
        parts.append(f"<h2 id='{direction}'>{direction} ({_count(files)})</h2><table><tr>"
                     + "".join(f"<th>{title}</th>" for title, _ in columns) + "</tr>")
        for file in files:
            parts.append("<tr>" + "".join(_cell(folder, file) for _, folder in columns) + "</tr>")
        parts.append("</table>")
    with open(os.path.join(results, "index.html"), "w", encoding="utf-8") as f:
        f.write("\n".join(parts) + "\n")


def _count(files):
    videos = sum(map(is_video, files))
    counts = [(len(files) - videos, "image"), (videos, "video")]
    return ", ".join(f"{n} {kind}{'s' if n != 1 else ''}" for n, kind in counts if n) or "none"


def _cell(folder, file):
    """A table cell showing results/<folder>/<file> above its name; empty for a video's
    reconstruction, which is not made."""
    if folder.startswith("rec_") and is_video(file):
        return "<td></td>"
    # Links quote the name's bytes (it may hold # or ?, or not be UTF-8); captions show it.
    src = html.escape(urllib.parse.quote(os.fsencode(f"{folder}/{file}")), quote=True)
    media = (f"<video controls preload='metadata' src='{src}'></video>" if is_video(file)
             else f"<img loading='lazy' src='{src}'>")
    return f"<td>{media}{html.escape(shown(file))}</td>"


def shown(name):
    """A file name as text: bytes that are not UTF-8 as \\xNN escapes."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")
