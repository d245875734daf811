from transformer_rl.cli import main

main()
