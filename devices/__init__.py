"""What a device is (devices.profile), which real devices exist (devices.catalogue), and how a
device's caps are imposed on a process (devices.caps, devices.launch).

Kept import-free so that the launcher that runs in every capped child starts lean.
"""
