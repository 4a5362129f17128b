"""What several test files share: paths of the repository, small inputs (images, meshes, Gaussians, sparse
structures, tiny models), live servers and free ports, the app's processes and its browser page.

Test files import these by their full name (``from tests.helpers.servers import LiveServer``), never another test
module: pytest.ini puts the repository's root on the path, so that name imports under ``./run.sh test``, under
``python -m pytest tests/x/test_y.py`` and in the children a test starts from the root (tests/test_structure.py
holds the rule)."""
