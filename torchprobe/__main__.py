from torchprobe._entry import main

main()
