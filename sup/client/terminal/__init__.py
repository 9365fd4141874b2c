"""`sup chat`: a small end-to-end encrypted chat in the terminal, on the client SDK.

    sup chat register --server https://sup.example --store alice.db --username alice [--invite CODE]
    sup chat --store alice.db                # later: open the saved device
    > /dm bob                                 # the direct chat with bob becomes the current chat
    > hello bob                               # any other line is sent to the current chat

Lines starting with `/` are commands (`/help` lists them); incoming messages are printed, numbered, as
they arrive. The device (tokens, keys, cursor, decrypted history, the outbox) lives in the store file,
created with mode 0600.

main.py parses the options and runs a session; lines.py reads the input (prompt_toolkit at a terminal,
plain lines from a pipe or file); commands.py runs the commands; view.py formats what is shown;
delivery.py sends the outbox and read receipts in the background. Only main.py is imported when the CLI
builds its parser, and it imports nothing but the standard library until a chat starts.
"""

from sup.client.terminal.main import add_arguments, cmd_chat, run_chat

__all__ = ["add_arguments", "cmd_chat", "run_chat"]
