SUMMARY = "Outpost DEVELOPMENT image: trusts the development key, ships the dev bundle"
DESCRIPTION = "outpost-image with the repository's development public key and the \
               dev-signed reference bundle instead of the release keys and bundle, for \
               lab units. Never field it: anything signed with the published development \
               key is accepted."
HOMEPAGE = "https://example.invalid/outpost"
BUGTRACKER = "https://example.invalid/outpost/issues"
CVE_PRODUCT = "outpost"
SECTION = "images"
LICENSE = "MIT"

require outpost-image.inc

IMAGE_INSTALL += "outpost-dev-trust"
