SUMMARY = "Outpost trusted bundle-signing public keys and the image's release bundle"
DESCRIPTION = "Installs the public keys a production image trusts (/etc/outpost/keys) \
               and the signed release bundle it ships with, both named by build \
               configuration variables, and a first-boot unit that installs that bundle \
               into an empty state partition."
HOMEPAGE = "https://example.invalid/outpost"
BUGTRACKER = "https://example.invalid/outpost/issues"
CVE_PRODUCT = "outpost"
SECTION = "base"
LICENSE = "Apache-2.0"
LIC_FILES_CHKSUM = "file://${COMMON_LICENSE_DIR}/Apache-2.0;md5=89aea4e17d99a7cacdbeed46a0096b10"

# Set in local.conf (or the kas file) of the release build, as absolute paths:
#   OUTPOST_TRUSTED_KEYS = "/secure/outpost-release-2026.pub"   (space-separated *.pub)
#   OUTPOST_RELEASE_BUNDLE = "/secure/outpost-commands-v7.bundle"
# Only public keys: a *.pk8 (or anything holding a private key) fails the build. Unset,
# the recipe still parses (CI checks the graph without release material) but do_install
# stops with what to set.
OUTPOST_TRUSTED_KEYS ??= ""
OUTPOST_RELEASE_BUNDLE ??= ""
OUTPOST_COMPATIBLE ?= "jetson-orin"

SRC_URI = "file://outpost-seed.service.in"
S = "${UNPACKDIR}"

inherit systemd allarch

SYSTEMD_SERVICE:${PN} = "outpost-seed.service"

def outpost_input_checksums(d):
    paths = (d.getVar('OUTPOST_TRUSTED_KEYS') or '').split() + (d.getVar('OUTPOST_RELEASE_BUNDLE') or '').split()
    return ' '.join('%s:%s' % (p, os.path.exists(p)) for p in paths)

do_install[file-checksums] += "${@outpost_input_checksums(d)}"
do_install[vardeps] += "OUTPOST_TRUSTED_KEYS OUTPOST_RELEASE_BUNDLE"

do_install() {
    if [ -z "${OUTPOST_TRUSTED_KEYS}" ] || [ -z "${OUTPOST_RELEASE_BUNDLE}" ]; then
        bbfatal "set OUTPOST_TRUSTED_KEYS (release public keys, *.pub) and OUTPOST_RELEASE_BUNDLE (a bundle signed by one of them) in local.conf; see meta-outpost's README.md"
    fi
    install -d ${D}${sysconfdir}/outpost/keys ${D}${datadir}/outpost ${D}${systemd_system_unitdir}
    for key in ${OUTPOST_TRUSTED_KEYS}; do
        case "$key" in
        *.pub) ;;
        *) bbfatal "OUTPOST_TRUSTED_KEYS: $key is not a public key (*.pub); never put a private key into an image" ;;
        esac
        if grep -q -i -e 'PRIVATE' -e 'development' "$key"; then
            bbfatal "$key: a private or development key must not be trusted by a production image"
        fi
        install -m 0644 "$key" ${D}${sysconfdir}/outpost/keys/
    done
    install -m 0644 ${OUTPOST_RELEASE_BUNDLE} ${D}${datadir}/outpost/release.bundle
    sed -e 's#@BUNDLE@#${datadir}/outpost/release.bundle#g' \
        -e 's#@ARGS@#--compatible ${OUTPOST_COMPATIBLE}#g' \
        ${S}/outpost-seed.service.in > ${D}${systemd_system_unitdir}/outpost-seed.service
    chmod 0644 ${D}${systemd_system_unitdir}/outpost-seed.service
}

FILES:${PN} += "${datadir}/outpost/release.bundle"
RDEPENDS:${PN} = "outpost-provision"
