"""The pipeline's axes against the files': the pipeline works z-up, glTF (and most OBJ) is y-up.

Row vectors: v_y_up = v_z_up @ Z_UP_TO_Y_UP, i.e. (x, y, z) -> (x, z, -y); Y_UP_TO_Z_UP is its inverse
(a rotation, so its transpose). Written once here so the export and the mesh reader cannot disagree.
"""
import numpy as np

Z_UP_TO_Y_UP = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
Y_UP_TO_Z_UP = Z_UP_TO_Y_UP.T.copy()
