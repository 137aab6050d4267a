/*
 * kvm-hold: keeps two idle KVM VMs open for the rig's whole life.
 *
 * KVM turns some of the kernel's static keys on with the first VM (or vCPU)
 * and off with the last one: the scheduler's preempt-notifier key, the
 * "LAPIC software-disabled" key, the "vCPU without an in-kernel LAPIC" key.
 * Each turn rewrites kernel text on a live SMP system (text_poke_bp(): an
 * int3 over the site, IPIs, then the new bytes). QEMU's multi-threaded TCG
 * has been seen to get stuck in that dance: both CPUs of the rig trapping on
 * finish_task_switch()'s preempt-notifier branch forever (soft lockups, then
 * the rig's heartbeat stops). Tests start and stop VMs one after another, so
 * every test turned those keys twice. Holding one VM with an in-kernel LAPIC
 * that software never enables, and one vCPU without an in-kernel LAPIC,
 * keeps the keys on and their sites unpatched while the tests run.
 *
 * Built by tests/rig/run into the rig's initramfs; started by tests/rig/init.
 */
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <unistd.h>

static int vm_with_one_vcpu(int kvm, int irqchip)
{
	int vm = ioctl(kvm, KVM_CREATE_VM, 0);
	if (vm < 0) {
		perror("kvm-hold: KVM_CREATE_VM");
		return -1;
	}
	if (irqchip && ioctl(vm, KVM_CREATE_IRQCHIP, 0) < 0) {
		perror("kvm-hold: KVM_CREATE_IRQCHIP");
		return -1;
	}
	if (ioctl(vm, KVM_CREATE_VCPU, 0) < 0) {
		perror("kvm-hold: KVM_CREATE_VCPU");
		return -1;
	}
	return 0;
}

int main(void)
{
	int kvm = open("/dev/kvm", O_RDWR | O_CLOEXEC);
	if (kvm < 0) {
		perror("kvm-hold: /dev/kvm");
		return 1;
	}
	if (vm_with_one_vcpu(kvm, 1) < 0 || vm_with_one_vcpu(kvm, 0) < 0)
		return 1;
	printf("kvm-hold: holding two idle VMs\n");
	fflush(stdout);
	for (;;)
		pause();
}
