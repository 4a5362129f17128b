"""Bad inputs for text mode and new looks: a prompt past the limit, files that claim more than they hold."""

LONG_PROMPT = ("a small red wooden chair with four legs and a tall back, " * 200)[:10_000]


def ply_claiming(faces: int) -> bytes:
    """A PLY whose header declares `faces` triangles (the body is not there: the header is all that is read)."""
    return (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
            b"property float z\nelement face %d\nproperty list uchar int vertex_indices\nend_header\n" % faces)
