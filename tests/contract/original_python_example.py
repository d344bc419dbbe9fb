# The "Python" usage example of the original API document our contract comes from, as it stands
# there (only the trailing call added, since the document defines the function without calling it).
# tests/integration/test_contract_clients.py runs it against the live stack with the host and port
# changed, to prove that a client written to that document works unchanged.
import requests

def generate_avatar():
    url = 'http://localhost:3000/api/avatar/generate'
    
    files = {
        'front': open('front.jpg', 'rb'),
        'left': open('left.jpg', 'rb'),
        'right': open('right.jpg', 'rb')
    }
    
    response = requests.post(url, files=files)
    result = response.json()
    
    if result['success']:
        avatar_id = result['data']['avatarId']
        
        # Download GLB file
        download_url = f'http://localhost:3000/api/avatar/download/{avatar_id}'
        glb_response = requests.get(download_url)
        
        with open('avatar.glb', 'wb') as f:
            f.write(glb_response.content)
        
        print(f'Avatar generated: {avatar_id}')
    
    # Close files
    for file in files.values():
        file.close()

generate_avatar()
