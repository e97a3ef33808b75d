# The Outpost state partition: A/B bundle slots, the anti-rollback floor, the audit log
# and the TensorRT caches, on a partition of its own so that reflashing or updating the
# rootfs keeps them.
#
# On Jetson the storage layout is not a wic kickstart: NVIDIA's flash layout XML
# (PARTITION_LAYOUT_TEMPLATE, applied by tegraflash) defines every partition, and its
# user-data partition (UDA) is filled from DATAFILE. This class builds that file: an empty
# ext4 file system labelled "outpost-state", OUTPOST_STATE_SIZE_MB large, and hands it to
# meta-tegra's tegraflash image type as the UDA contents. outpost-system mounts it at
# /var/lib/outpost (nosuid, nodev, noexec) by that label.

OUTPOST_STATE_SIZE_MB ??= "2048"
OUTPOST_STATE_LABEL = "outpost-state"

IMAGE_TYPES += "outpoststate"
IMAGE_FSTYPES += "outpoststate"
do_image_outpoststate[depends] += "e2fsprogs-native:do_populate_sysroot"
do_image_outpoststate[cleandirs] = "${WORKDIR}/outpost-state"
do_image_outpoststate[doc] = "Builds the empty ext4 state partition written to the UDA partition at flash time"
IMAGE_CMD:outpoststate[doc] = "Makes the ext4 file system of the state partition"

IMAGE_CMD:outpoststate () {
    install -d -m 0750 ${WORKDIR}/outpost-state/root
    rm -f ${IMGDEPLOYDIR}/${IMAGE_NAME}.outpoststate
    mkfs.ext4 -F -L ${OUTPOST_STATE_LABEL} -d ${WORKDIR}/outpost-state/root \
        -E root_owner=0:0 ${IMGDEPLOYDIR}/${IMAGE_NAME}.outpoststate ${OUTPOST_STATE_SIZE_MB}M
}

DATAFILE = "outpost-state.ext4"
IMAGE_TEGRAFLASH_DATA = "${IMGDEPLOYDIR}/${IMAGE_NAME}.outpoststate"
# IMAGE_TYPEDEP:<type> is a variable per image type (image.bbclass), not an override.
# nooelint: oelint.vars.overrideappend,oelint.vars.specific
IMAGE_TYPEDEP:tegraflash-tar:append = " outpoststate"
