# nova-compute from python3-nova, without the nova-compute package (it pulls libvirt and qemu).
import sys
from nova.cmd.compute import main
sys.argv[0] = 'nova-compute'
sys.exit(main())
