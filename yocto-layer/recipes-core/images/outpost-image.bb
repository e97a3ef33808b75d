SUMMARY = "Outpost: offline voice-command appliance image for Jetson Orin"
DESCRIPTION = "The Outpost daemon, client and provisioning tools, ONNX Runtime with \
               the TensorRT and CUDA execution providers, the release keys and bundle, \
               and no network path: no network services, no network drivers, a drop-all \
               packet filter."
HOMEPAGE = "https://example.invalid/outpost"
BUGTRACKER = "https://example.invalid/outpost/issues"
CVE_PRODUCT = "outpost"
SECTION = "images"
LICENSE = "MIT"

require outpost-image.inc

IMAGE_INSTALL += "outpost-trust"
