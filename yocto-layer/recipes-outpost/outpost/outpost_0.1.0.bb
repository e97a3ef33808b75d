SUMMARY = "Outpost voice-command daemon, client CLI and bundle provisioning"
DESCRIPTION = "Builds the Outpost Cargo workspace once and splits it into outpostd (the \
               daemon and its systemd unit), outpost (the client CLI) and outpost-provision \
               (bundle verification and A/B install, with the USB provisioning udev rule \
               and unit)."
HOMEPAGE = "https://example.invalid/outpost"
BUGTRACKER = "https://example.invalid/outpost/issues"
CVE_PRODUCT = "outpost"
SECTION = "base"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Source: this repository's workspace, used in place (externalsrc), so the recipe parses
# and builds with no network and no SRCREV to bump. OUTPOST_SRC_DIR defaults to the
# directory above the layer (conf/layer.conf); a release build points it at a clean
# checkout of the release tag. externalsrc keeps the crate:// entries below, so every
# dependency is still fetched by do_fetch and checked against Cargo.lock's sha256.
inherit externalsrc
EXTERNALSRC = "${OUTPOST_SRC_DIR}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"
# Do not drop oe-workdir/oe-logs symlinks into the developer's tree.
EXTERNALSRC_SYMLINKS = ""

inherit cargo cargo-update-recipe-crates systemd useradd
require ${BPN}-crates.inc

# One cargo invocation builds the three binaries, so the crates they share (ring, clap,
# serde, the protocol and model crates) are compiled once. `--bin` without `-p` picks
# the binary from whichever default workspace member holds it, so this works whether
# the CLI lives in firmware-host/ or in its own client/ crate.
OUTPOST_BINS = "outpostd outpost outpost-provision"
CARGO_BUILD_FLAGS:append = " ${@' '.join('--bin ' + b for b in d.getVar('OUTPOST_BINS').split())}"

# Where ONNX Runtime (meta-tegra-community's onnxruntime, TensorRT and CUDA providers)
# installs its library; `ort` is built with load-dynamic, so nothing links it and the
# daemon opens it from ORT_DYLIB_PATH.
OUTPOST_ORT_DYLIB = "${libdir}/libonnxruntime.so"
# Threads: systemd pins the whole daemon to the isolated CPUs; workers go to all but the
# first of them, which the SCHED_FIFO deadline timer and I/O threads share.
OUTPOST_DAEMON_CPUS ?= "${OUTPOST_ISOLATED_CPUS}"
OUTPOST_WORKER_CPUS ?= "3,4,5"
OUTPOST_SERIAL ?= "/dev/ttyTHS1"
OUTPOST_BAUD ?= "921600"
OUTPOST_WATCHDOG_SEC ?= "5"
OUTPOST_COMPATIBLE ?= "jetson-orin"

SRC_URI += "file://outpostd.service.in file://outpostd.env"

PACKAGES =+ "outpostd outpost-provision"

FILES:outpostd += "\
    ${bindir}/outpostd \
    ${systemd_system_unitdir}/outpostd.service \
    ${sysconfdir}/outpost/outpostd.env \
"
CONFFILES:outpostd = "${sysconfdir}/outpost/outpostd.env"
FILES:outpost-provision += "\
    ${bindir}/outpost-provision \
    ${systemd_system_unitdir}/outpost-usb@.service \
    ${sysconfdir}/udev/rules.d/99-outpost-usb.rules \
    ${sysconfdir}/outpost/provision.env \
"
CONFFILES:outpost-provision = "${sysconfdir}/outpost/provision.env"
# ${PN} (the client CLI) keeps what is left: ${bindir}/outpost.

# load-dynamic: the dependency on ONNX Runtime is invisible to the shlibs scan, so it
# is stated here. The provider libraries pull TensorRT and CUDA in through their own
# shared-library dependencies.
RDEPENDS:outpostd = "onnxruntime outpost-provision"
RDEPENDS:outpost-provision = "util-linux-mount util-linux-umount"

SYSTEMD_PACKAGES = "outpostd"
SYSTEMD_SERVICE:outpostd = "outpostd.service"
SYSTEMD_AUTO_ENABLE:outpostd = "enable"

USERADD_PACKAGES = "outpostd"
GROUPADD_PARAM:outpostd = "--system outpost"
USERADD_PARAM:outpostd = "--system --gid outpost --groups dialout --home-dir ${localstatedir}/lib/outpost --no-create-home --shell /sbin/nologin outpost"

do_install:append() {
    install -d ${D}${systemd_system_unitdir} ${D}${sysconfdir}/outpost
    sed -e 's#@BINDIR@#${bindir}#g' \
        -e 's#@ORT_DYLIB_PATH@#${OUTPOST_ORT_DYLIB}#g' \
        -e 's#@DAEMON_CPUS@#${OUTPOST_DAEMON_CPUS}#g' \
        -e 's#@WORKER_CPUS@#${OUTPOST_WORKER_CPUS}#g' \
        -e 's#@WATCHDOG_SEC@#${OUTPOST_WATCHDOG_SEC}#g' \
        ${UNPACKDIR}/outpostd.service.in > ${D}${systemd_system_unitdir}/outpostd.service
    sed -e 's#@SERIAL@#${OUTPOST_SERIAL}#g' -e 's#@BAUD@#${OUTPOST_BAUD}#g' \
        ${UNPACKDIR}/outpostd.env > ${D}${sysconfdir}/outpost/outpostd.env
    chmod 0644 ${D}${systemd_system_unitdir}/outpostd.service ${D}${sysconfdir}/outpost/outpostd.env

    # USB provisioning: the rule and the templated unit of provisioning/, as they are.
    install -d ${D}${sysconfdir}/udev/rules.d
    install -m 0644 ${S}/provisioning/udev/99-outpost-usb.rules \
        ${D}${sysconfdir}/udev/rules.d/99-outpost-usb.rules
    install -m 0644 ${S}/provisioning/systemd/outpost-usb@.service ${D}${systemd_system_unitdir}/
    echo 'OUTPOST_PROVISION_ARGS="--compatible ${OUTPOST_COMPATIBLE}"' > ${D}${sysconfdir}/outpost/provision.env
    chmod 0644 ${D}${sysconfdir}/outpost/provision.env
}
