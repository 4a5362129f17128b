"""O-Voxel, TRELLIS.2's representation: fine voxels with a flexible-dual-grid mesh and PBR attributes."""
from .dual_grid import QUAD_OFFSETS, dual_grid_quads, dual_vertices_world, flexible_dual_grid_to_mesh, split_quads
from .gltf_axes import to_gltf_frame
from .grid_sample import grid_sample_3d
from .head import PBR_LAYOUT, VOXEL_MARGIN, ShapeHead, pbr_attributes, shape_head
from .lookup import VoxelLookup
from .mesh_with_voxel import MeshWithVoxel
from .qef import plane_quadrics, solve_box
from .user_mesh import MeshFrame, TexturedVoxels, UserMesh, read_user_mesh
from .voxelize import OVoxelGrid, mesh_to_ovoxel, ovoxel_features, ovoxel_mesh, weld_vertices

__all__ = ["QUAD_OFFSETS", "dual_grid_quads", "dual_vertices_world", "flexible_dual_grid_to_mesh", "split_quads",
           "to_gltf_frame", "grid_sample_3d", "PBR_LAYOUT", "VOXEL_MARGIN", "ShapeHead", "pbr_attributes",
           "shape_head", "VoxelLookup", "MeshWithVoxel", "plane_quadrics", "solve_box", "OVoxelGrid", "mesh_to_ovoxel",
           "ovoxel_features", "ovoxel_mesh", "weld_vertices", "MeshFrame", "TexturedVoxels", "UserMesh",
           "read_user_mesh"]
