#!/bin/sh
# Turns a debootstrapped Debian root (ROOT, $1) into the VM test's guest:
# run on the host by integration/vm.rs, once per cached image. The guest
# boots Debian's own kernel with systemd as PID 1 on pure cgroup v2, with
# no network; at every boot a unit mounts the 9p share and runs the
# share's guest.sh, so the checks change without a new image.
set -eu
root=$1

# Debian's initramfs (MODULES=most) must carry what mounts a virtio-blk
# ext4 root, and the kernel the 9p modules for the share: refuse an image
# that would hang at boot instead of failing here.
kernel=$(ls "$root"/boot/vmlinuz-* | head -n 1)
version=${kernel##*/vmlinuz-}
for m in kernel/drivers/block/virtio_blk.ko kernel/fs/9p/9p.ko kernel/net/9p/9pnet_virtio.ko; do
  [ -e "$root/usr/lib/modules/$version/$m" ] || { echo "setup-image: no $m in $version" >&2; exit 1; }
done
chroot "$root" lsinitramfs "/boot/initrd.img-$version" >"$root/tmp/initrd.list"
for m in virtio_blk.ko virtio_pci.ko ext4.ko; do
  grep -q "/$m\$" "$root/tmp/initrd.list" || { echo "setup-image: the initramfs lacks $m" >&2; exit 1; }
done
rm "$root/tmp/initrd.list"

echo venussup-vm >"$root/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 venussup-vm\n' >"$root/etc/hosts"
# A fixed machine id: no first-boot setup, no prompt on the console.
echo 5e7e5a9b1d0c4a3f8e2d6c1b0a998877 >"$root/etc/machine-id"
ln -sf /dev/null "$root/etc/systemd/system/systemd-firstboot.service"
# The console is a file: no login prompt on it.
ln -sf /dev/null "$root/etc/systemd/system/serial-getty@ttyS0.service"
# Nothing periodic runs during the checks.
for t in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
  ln -sf /dev/null "$root/etc/systemd/system/$t"
done

printf '9p\n9pnet_virtio\n' >"$root/etc/modules-load.d/venussup-vm.conf"
mkdir -p "$root/mnt/share"
cat >"$root/etc/fstab" <<'EOF'
/dev/vda  /           ext4  rw,errors=remount-ro                        0 1
share     /mnt/share  9p    trans=virtio,version=9p2000.L,msize=262144  0 0
EOF

cat >"$root/etc/systemd/system/vmcheck.service" <<'EOF'
[Unit]
Description=venussup VM test (integration/vm.rs): the checks from the 9p share
RequiresMountsFor=/mnt/share
After=local-fs.target

[Service]
Type=exec
ExecStart=/bin/sh /mnt/share/guest.sh
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/vmcheck.service \
  "$root/etc/systemd/system/multi-user.target.wants/vmcheck.service"

# Smaller image, faster mkfs: what the guest never reads.
rm -rf "$root"/var/cache/apt/*.bin "$root"/var/lib/apt/lists/* \
  "$root"/usr/share/doc "$root"/usr/share/man "$root"/usr/share/locale
for d in gpu net/wireless net/ethernet media sound infiniband staging scsi/lpfc scsi/qla2xxx; do
  rm -rf "$root/usr/lib/modules/$version/kernel/drivers/$d"
done
rm -rf "$root/usr/lib/modules/$version/kernel/sound"
