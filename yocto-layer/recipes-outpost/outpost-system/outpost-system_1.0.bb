SUMMARY = "Outpost system setup: clocks, CPU isolation, firewall, state partition"
DESCRIPTION = "Pins the clocks at boot (nvpmodel MAXN, jetson_clocks), keeps every \
               unit but the Outpost daemon on the housekeeping CPUs, loads a drop-all \
               nftables ruleset before anything else starts, blacklists network drivers, \
               and mounts the state partition."
HOMEPAGE = "https://example.invalid/outpost"
BUGTRACKER = "https://example.invalid/outpost/issues"
CVE_PRODUCT = "outpost"
SECTION = "base"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

SRC_URI = "\
    file://outpost-clocks.service \
    file://outpost-firewall.service \
    file://nftables.conf \
    file://var-lib-outpost.mount \
    file://10-outpost-cpuaffinity.conf.in \
    file://outpost-no-network.conf \
"
S = "${UNPACKDIR}"

inherit systemd allarch

SYSTEMD_SERVICE:${PN} = "outpost-clocks.service outpost-firewall.service var-lib-outpost.mount"

do_install() {
    install -d ${D}${systemd_system_unitdir} ${D}${systemd_unitdir}/system.conf.d \
        ${D}${sysconfdir}/outpost ${D}${sysconfdir}/modprobe.d
    install -m 0644 ${S}/outpost-clocks.service ${S}/outpost-firewall.service \
        ${S}/var-lib-outpost.mount ${D}${systemd_system_unitdir}/
    sed -e 's#@HOUSEKEEPING_CPUS@#${OUTPOST_HOUSEKEEPING_CPUS}#g' ${S}/10-outpost-cpuaffinity.conf.in \
        > ${D}${systemd_unitdir}/system.conf.d/10-outpost-cpuaffinity.conf
    chmod 0644 ${D}${systemd_unitdir}/system.conf.d/10-outpost-cpuaffinity.conf
    install -m 0644 ${S}/nftables.conf ${D}${sysconfdir}/outpost/nftables.conf
    install -m 0644 ${S}/outpost-no-network.conf ${D}${sysconfdir}/modprobe.d/
}

FILES:${PN} += "${systemd_unitdir}/system.conf.d"
# The ruleset is the backstop for the kernel fragment that drops the network drivers.
RDEPENDS:${PN} = "nftables tegra-nvpmodel tegra-tools-jetson-clocks"
