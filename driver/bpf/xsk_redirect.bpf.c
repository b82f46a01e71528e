// SPDX-License-Identifier: (GPL-2.0-only OR BSD-2-Clause)
/*
 * joypath's XDP program: hands the overlay (UDP to the gateway's VXLAN port, over IPv4 or IPv6,
 * optionally behind one 802.1Q tag) to the AF_XDP socket of the receiving queue; everything else
 * (ARP for the gateway's own address, ICMP, management traffic, other UDP) goes on to the kernel
 * stack with XDP_PASS. Self-contained: no kernel or libbpf headers needed, only clang -target bpf.
 */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

enum { XDP_ABORTED = 0, XDP_DROP, XDP_PASS, XDP_TX, XDP_REDIRECT };
#define BPF_MAP_TYPE_XSKMAP 17

struct xdp_md {
	__u32 data;
	__u32 data_end;
	__u32 data_meta;
	__u32 ingress_ifindex;
	__u32 rx_queue_index;
	__u32 egress_ifindex;
};

static long (*bpf_redirect_map)(void *map, __u64 key, __u64 flags) = (void *)51;

struct {
	__uint(type, BPF_MAP_TYPE_XSKMAP);
	__uint(max_entries, 256);
	__type(key, __u32);
	__type(value, __u32);
} xsks SEC(".maps");

/* The VXLAN UDP port in network byte order; set by the loader before the program is loaded. */
volatile const __u16 PORT_BE = 0xb512; /* 4789 */

#define ETH_P_IP_BE 0x0008
#define ETH_P_IPV6_BE 0xdd86
#define ETH_P_8021Q_BE 0x0081
#define IPPROTO_UDP 17

SEC("xdp")
int xsk_redirect(struct xdp_md *ctx)
{
	__u8 *data = (__u8 *)(long)ctx->data;
	__u8 *end = (__u8 *)(long)ctx->data_end;
	__u8 *p = data + 14;
	if (p > end)
		return XDP_PASS;
	__u16 proto = *(__u16 *)(data + 12);
	if (proto == ETH_P_8021Q_BE) {
		if (p + 4 > end)
			return XDP_PASS;
		proto = *(__u16 *)(p + 2);
		p += 4;
	}
	__u8 *udp;
	if (proto == ETH_P_IP_BE) {
		if (p + 20 > end)
			return XDP_PASS;
		if (p[9] != IPPROTO_UDP)
			return XDP_PASS;
		/* fragments (offset != 0 or MF) go to the kernel */
		if ((*(__u16 *)(p + 6)) & 0xff3f)
			return XDP_PASS;
		__u32 ihl = (p[0] & 0x0f) * 4;
		if (ihl < 20)
			return XDP_PASS;
		udp = p + ihl;
	} else if (proto == ETH_P_IPV6_BE) {
		if (p + 40 > end)
			return XDP_PASS;
		if (p[6] != IPPROTO_UDP)
			return XDP_PASS;
		udp = p + 40;
	} else {
		return XDP_PASS;
	}
	if (udp + 8 > end)
		return XDP_PASS;
	if (*(__u16 *)(udp + 2) != PORT_BE)
		return XDP_PASS;
	return bpf_redirect_map(&xsks, ctx->rx_queue_index, XDP_PASS);
}

char _license[] SEC("license") = "Dual BSD/GPL";
