"""Test guest image (Debian kernel + busybox initramfs) for e2e tests and demos."""
from guest_images.build import GuestImage, ensure_guest_image

__all__ = ["GuestImage", "ensure_guest_image"]
