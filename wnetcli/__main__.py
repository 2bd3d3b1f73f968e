"""``python -m wnetcli`` runs the same CLI as the ``wnet`` console script."""

from wnetcli.cli import main

if __name__ == "__main__":
    main()
