SUMMARY = "Outpost DEVELOPMENT key and dev-signed reference bundle (outpost-image-dev only)"
DESCRIPTION = "Trusts the repository's development public key, ships the dev-signed \
               reference bundle, and lets the daemon and USB provisioning accept \
               development bundles. For lab units only: outpost-image never contains \
               this package."
HOMEPAGE = "https://example.invalid/outpost"
BUGTRACKER = "https://example.invalid/outpost/issues"
CVE_PRODUCT = "outpost"
SECTION = "base"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# The development public key of the repository, and the dev bundle that scripts/setup
# builds on the build host (.outpost/dev.bundle; run ./scripts/setup before bitbake).
OUTPOST_DEV_KEY ?= "${OUTPOST_SRC_DIR}/models/reference/dev-keys/outpost-dev-DO-NOT-DEPLOY.pub"
OUTPOST_DEV_BUNDLE ?= "${OUTPOST_SRC_DIR}/.outpost/dev.bundle"
OUTPOST_COMPATIBLE ?= "jetson-orin"

SRC_URI = "file://outpost-seed.service.in"
S = "${UNPACKDIR}"

inherit systemd allarch

SYSTEMD_SERVICE:${PN} = "outpost-seed.service"

def outpost_dev_checksums(d):
    return ' '.join('%s:%s' % (p, os.path.exists(p)) for p in (d.getVar('OUTPOST_DEV_KEY'), d.getVar('OUTPOST_DEV_BUNDLE')))

do_install[file-checksums] += "${@outpost_dev_checksums(d)}"

do_install() {
    for f in ${OUTPOST_DEV_KEY} ${OUTPOST_DEV_BUNDLE}; do
        [ -f "$f" ] || bbfatal "$f is missing (run ./scripts/setup in the Outpost repository first)"
    done
    case "${OUTPOST_DEV_KEY}" in *.pub) ;; *) bbfatal "OUTPOST_DEV_KEY must be a public key (*.pub)" ;; esac
    install -d ${D}${sysconfdir}/outpost/keys ${D}${datadir}/outpost ${D}${systemd_system_unitdir} \
        ${D}${systemd_system_unitdir}/outpostd.service.d ${D}${systemd_system_unitdir}/outpost-usb@.service.d
    install -m 0644 ${OUTPOST_DEV_KEY} ${D}${sysconfdir}/outpost/keys/
    install -m 0644 ${OUTPOST_DEV_BUNDLE} ${D}${datadir}/outpost/dev.bundle
    sed -e 's#@BUNDLE@#${datadir}/outpost/dev.bundle#g' \
        -e 's#@ARGS@#--compatible ${OUTPOST_COMPATIBLE} --allow-development#g' \
        ${S}/outpost-seed.service.in > ${D}${systemd_system_unitdir}/outpost-seed.service
    # Drop-ins add a second EnvironmentFile: a later file overrides the earlier one
    # (an Environment= line would not: EnvironmentFile= wins over it).
    echo 'OUTPOSTD_ARGS=--dev' > ${D}${sysconfdir}/outpost/outpostd-dev.env
    echo 'OUTPOST_PROVISION_ARGS="--compatible ${OUTPOST_COMPATIBLE} --allow-development"' \
        > ${D}${sysconfdir}/outpost/provision-dev.env
    printf '%s\n' '# DEVELOPMENT image: the daemon accepts development-signed bundles.' \
        '[Service]' 'EnvironmentFile=${sysconfdir}/outpost/outpostd-dev.env' \
        > ${D}${systemd_system_unitdir}/outpostd.service.d/50-development.conf
    printf '%s\n' '# DEVELOPMENT image: USB sticks may carry development-signed bundles.' \
        '[Service]' 'EnvironmentFile=${sysconfdir}/outpost/provision-dev.env' \
        > ${D}${systemd_system_unitdir}/outpost-usb@.service.d/50-development.conf
    chmod 0644 ${D}${sysconfdir}/outpost/outpostd-dev.env ${D}${sysconfdir}/outpost/provision-dev.env
    chmod 0644 ${D}${systemd_system_unitdir}/outpost-seed.service \
        ${D}${systemd_system_unitdir}/outpostd.service.d/50-development.conf \
        ${D}${systemd_system_unitdir}/outpost-usb@.service.d/50-development.conf
}

FILES:${PN} += "\
    ${datadir}/outpost/dev.bundle \
    ${systemd_system_unitdir}/outpostd.service.d \
    ${systemd_system_unitdir}/outpost-usb@.service.d \
"
RDEPENDS:${PN} = "outpost-provision"
RCONFLICTS:${PN} = "outpost-trust"
