/* tap.c - open a TAP device for the data plane. */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <linux/if.h>
#include <linux/if_tun.h>
#include "vnic.h"

int vnic_tap_open(const char *ifname, char *actual_name, int actual_len)
{
    int fd = open("/dev/net/tun", O_RDWR | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    struct ifreq ifr;
    memset(&ifr, 0, sizeof(ifr));
    /* the vnet header carries offload metadata both ways, 12 bytes like the guest's */
    ifr.ifr_flags = IFF_TAP | IFF_NO_PI | IFF_VNET_HDR;
    strncpy(ifr.ifr_name, ifname, IFNAMSIZ - 1);
    int hdr = 12;
    if (ioctl(fd, TUNSETIFF, &ifr) < 0 || ioctl(fd, TUNSETVNETHDRSZ, &hdr) < 0 ||
        ioctl(fd, TUNSETOFFLOAD, 0) < 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    if (actual_name && actual_len > 0) {
        strncpy(actual_name, ifr.ifr_name, (size_t)actual_len - 1);
        actual_name[actual_len - 1] = 0;
    }
    return fd;
}
