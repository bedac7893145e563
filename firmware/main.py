import board
from upcert import app

app.main(board)
