"""What ``POST /api/files/upload`` accepts (Java's ``FileUtil``) and how the multipart body is read.

The upload exists only so that ``chatMessage`` with ``type:"file"`` can be exercised; these rules
are data, kept out of the REST controllers (``rest.py``) so the controllers read as routes.
"""

from __future__ import annotations

import time

MB = 1024 * 1024
MAX_UPLOAD = 50 * MB
# FileUtil.ALLOWED_TYPES: mime type -> (extensions, size limit)
ALLOWED_UPLOADS: dict[str, tuple[tuple[str, ...], int]] = {
    "image/jpeg": (("jpg", "jpeg"), 10 * MB), "image/png": (("png",), 10 * MB), "image/gif": (("gif",), 10 * MB),
    "image/webp": (("webp",), 10 * MB), "video/mp4": (("mp4",), 50 * MB), "video/webm": (("webm",), 50 * MB),
    "video/quicktime": (("mov",), 50 * MB), "audio/mpeg": (("mp3",), 20 * MB), "audio/wav": (("wav",), 20 * MB),
    "audio/ogg": (("ogg",), 20 * MB), "application/pdf": (("pdf",), 20 * MB),
    "application/msword": (("doc",), 20 * MB),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (("docx",), 20 * MB),
}


def iso_local(ms: int) -> str:
    """``LocalDateTime.toString()``-like text without zone, e.g. ``2025-11-18T12:34:56.789``."""
    t = time.localtime(ms // 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", t) + f".{ms % 1000:03d}"


def multipart_file(content_type: str, body: bytes) -> tuple[str, str, int] | None:
    """(original filename, mime type, size) of the multipart part named ``file``, else None."""
    if not content_type.lower().startswith("multipart/form-data"):
        return None
    from email import policy
    from email.parser import BytesParser

    try:
        msg = BytesParser(policy=policy.HTTP).parsebytes(b"Content-Type: " + content_type.encode("latin-1")
                                                         + b"\r\n\r\n" + body)
    except Exception:
        return None
    if not msg.is_multipart():
        return None
    for part in msg.iter_parts():
        if part.get_param("name", header="content-disposition") == "file":
            filename = part.get_filename() or ""
            payload = part.get_payload(decode=True) or b""
            return filename, part.get_content_type(), len(payload)
    return None
