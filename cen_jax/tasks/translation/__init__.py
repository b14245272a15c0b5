"""Multi-domain image-to-image translation with CEN (Taskonomy)."""
